"""HTTP to registry endpoints on aiohttp: authentication, retries with backoff, redirects,
and the HTTPS→HTTP fallback for local registries.

One ``RegistryClient`` holds one ``aiohttp.ClientSession`` (a pool of keep-alive
connections) and one ``Authorizer`` (a token cache); a daemon keeps one for its lifetime,
a pull with its own credentials makes its own. ``client.repository(ref)`` binds it to a
repository (see ``remotes.repository``).

Retry policy, following containerd: a connection error, a timeout while connecting, or a
408/429/500/502/503/504 response is retried with exponential backoff (with jitter) up to
``RetryPolicy.max_attempts`` — on the last endpoint only; on a mirror, the next endpoint is
tried instead. A 401 is answered once per challenge through the authorizer; a 405 to a
``HEAD`` of a manifest is retried as ``GET`` (registries that do not implement HEAD).
Redirects are followed (aiohttp drops ``Authorization`` when the host changes, so blob
storage signed URLs work and tokens do not leak).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from arun import errdefs
from arun.remotes.auth import Authorizer, Credentials
from arun.remotes.errors import error_for_status
from arun.remotes.hosts import HostsConfig, RegistryHost

if TYPE_CHECKING:
    from arun.remotes.repository import Repository

log = logging.getLogger(__name__)

__all__ = ["ClientOptions", "RegistryClient", "RetryPolicy"]

# containerd's limit on manifests and indexes (sic: 4 * 1048 * 1048).
MAX_MANIFEST_SIZE = 4 * 1048 * 1048
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
USER_AGENT = "arun/0.1 (containerd-compatible)"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff * 4)
        base = min(self.initial_backoff * (2 ** (attempt - 1)), self.max_backoff)
        return float(base * (0.5 + random.random() / 2))


@dataclass(frozen=True)
class ClientOptions:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # No byte received for this long while reading a body → DeadlineExceededError. None: wait forever.
    stall_timeout: float | None = 300.0
    connect_timeout: float = 30.0
    user_agent: str = USER_AGENT
    headers: Mapping[str, str] = field(default_factory=dict)
    max_manifest_size: int = MAX_MANIFEST_SIZE
    # Size of the pieces a blob body is read in.
    chunk_size: int = 1 << 20
    # Connections per registry host (aiohttp pool).
    connections_per_host: int = 16


def _is_tls_error(exc: BaseException) -> bool:
    return isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError))


def _transient(exc: BaseException) -> bool:
    """Errors worth another attempt (refused, reset, timed out while connecting)."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return False
    return isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, OSError))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    v = headers.get("Retry-After")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None


class RegistryClient:
    """Talks to registry endpoints. Close it (``await client.close()`` or ``async with``)."""

    def __init__(
        self,
        hosts: HostsConfig | Callable[[str], list[RegistryHost]] | None = None,
        *,
        credentials: Credentials | None = None,
        options: ClientOptions | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.options = options or ClientOptions()
        cfg = hosts if hosts is not None else HostsConfig()
        self._hosts_fn: Callable[[str], list[RegistryHost]] = (
            cfg.hosts if isinstance(cfg, HostsConfig) else cfg
        )
        self._own_session = session is None
        self.session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=self.options.connections_per_host),
            auto_decompress=False,
            headers={"User-Agent": self.options.user_agent, **self.options.headers},
        )
        self._ssl: dict[str, ssl.SSLContext | None] = {}
        # Hosts that answered plain HTTP after a TLS failure (containerd remembers this too).
        self._plain_http: set[str] = set()
        self.authorizer = Authorizer(self.session, credentials, ssl_for=self._ssl_for_url_host)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session:
            await self.session.close()

    def hosts(self, registry: str) -> list[RegistryHost]:
        hosts = self._hosts_fn(registry)
        for h in hosts:
            self._ssl.setdefault(h.host, h.ssl_context())
        return hosts

    def repository(self, ref: str) -> Repository:
        """A ``Repository`` for a fully qualified reference (``host/path[:tag][@digest]``)."""
        from arun.remotes.repository import Repository

        return Repository(self, ref)

    def _ssl_for_url_host(self, netloc: str) -> ssl.SSLContext | None:
        return self._ssl.get(netloc)

    def _ssl_arg(self, host: RegistryHost) -> ssl.SSLContext | bool:
        ctx = self._ssl.get(host.host)
        if ctx is None and host.host not in self._ssl:
            ctx = self._ssl[host.host] = host.ssl_context()
        return ctx if ctx is not None else True

    def _timeout(self, host: RegistryHost, *, stall: bool) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None,
            sock_connect=host.dial_timeout or self.options.connect_timeout,
            sock_read=self.options.stall_timeout if stall else max(self.options.stall_timeout or 0, 60.0),
        )

    def url(self, host: RegistryHost, repository: str, *parts: str) -> str:
        scheme = host.scheme
        if host.http_fallback and host.host in self._plain_http:
            scheme = "http"
        if scheme != host.scheme:
            from dataclasses import replace

            host = replace(host, scheme=scheme)
        return host.url(repository, *parts)

    @contextlib.asynccontextmanager
    async def request(
        self,
        host: RegistryHost,
        method: str,
        repository: str,
        *parts: str,
        registry: str,
        scopes: Sequence[str],
        headers: Mapping[str, str] | None = None,
        params: Iterable[tuple[str, str]] = (),
        data: Any = None,
        last_host: bool = True,
        url: str | None = None,
        stall: bool = False,
        retry_data: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One logical request with retries; yields the final response (any status — the
        caller decides what a 404 means). ``url`` overrides the path (upload locations).
        ``retry_data`` False: the body is a stream that cannot be sent twice."""
        query = list(params)
        if host.is_proxy(registry) and url is None:
            query.append(("ns", registry))
        hdrs: dict[str, str] = {}
        for k, vs in host.header.items():
            hdrs[k] = ", ".join(vs)
        hdrs.update(headers or {})
        policy = self.options.retry
        attempt = 0
        challenges = 0
        while True:
            target = url or self.url(host, repository, *parts)
            auth = await self.authorizer.authorization(host.host, scopes)
            req_headers = dict(hdrs)
            if auth is not None:
                req_headers["Authorization"] = auth
            attempt += 1
            # Large bodies go as a fresh stream per attempt (aiohttp warns on big raw bytes).
            body = io.BytesIO(data) if isinstance(data, bytes) and len(data) > 1 << 20 else data
            try:
                resp = await self.session.request(
                    method,
                    target,
                    headers=req_headers,
                    params=query or None,
                    data=body,
                    ssl=self._ssl_arg(host) if target.startswith("https:") else False,
                    timeout=self._timeout(host, stall=stall),
                    allow_redirects=True,
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if stall and isinstance(exc, aiohttp.SocketTimeoutError):
                    raise errdefs.DeadlineExceededError(
                        f"{method} {target}: no response for {self.options.stall_timeout}s"
                    ) from exc
                if (
                    host.http_fallback
                    and host.host not in self._plain_http
                    and _is_tls_error(exc)
                    and url is None
                ):
                    log.debug("%s does not speak TLS, falling back to plain HTTP", host.host)
                    self._plain_http.add(host.host)
                    attempt -= 1
                    continue
                what = f"{method} {target}"
                if not _transient(exc) or not last_host or attempt >= policy.max_attempts or not retry_data:
                    if isinstance(exc, aiohttp.ClientSSLError):
                        raise errdefs.UnavailableError(f"{what}: TLS error: {exc}") from exc
                    if isinstance(exc, TimeoutError):
                        raise errdefs.UnavailableError(f"{what}: timed out connecting") from exc
                    raise errdefs.UnavailableError(f"{what}: {exc}") from exc
                delay = policy.delay(attempt)
                log.debug("%s failed (%s); retrying in %.2fs (attempt %d)", what, exc, delay, attempt)
                await asyncio.sleep(delay)
                continue

            status = resp.status
            if status == 401:
                www = resp.headers
                resp.release()
                challenges += 1
                if challenges > 2:
                    raise errdefs.UnauthenticatedError(f"{method} {target}: authorization failed")
                await self.authorizer.on_unauthorized(host.host, www, auth)
                attempt -= 1
                continue
            if status == 405 and method == "HEAD" and "/manifests/" in target:
                resp.release()
                method = "GET"
                attempt -= 1
                continue
            if status in RETRY_STATUSES and last_host and attempt < policy.max_attempts and retry_data:
                delay = policy.delay(attempt, _retry_after(resp.headers))
                log.debug("%s %s: status %d; retrying in %.2fs", method, target, status, delay)
                resp.release()
                await asyncio.sleep(delay)
                continue
            try:
                yield resp
            finally:
                resp.release()
            return

    async def error(self, resp: aiohttp.ClientResponse, what: str) -> errdefs.ArunError:
        """The error for a failed response, with the registry's message (body read, capped)."""
        try:
            body = await resp.content.read(8192) if resp.method != "HEAD" else b""
        except (aiohttp.ClientError, TimeoutError):
            body = b""
        return error_for_status(resp.status, what, body, resp.headers.get("Content-Type", ""))
