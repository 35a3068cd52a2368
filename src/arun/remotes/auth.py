"""Registry authentication: ``WWW-Authenticate`` challenges, Basic, and Bearer tokens.

The flow is the distribution token spec's, as containerd runs it: a request without
credentials gets ``401`` with a challenge; for ``Basic`` the next request carries the
user's credentials; for ``Bearer`` a token is fetched from the challenge's ``realm`` for
the ``service`` and the repository ``scope`` (``repository:<name>:pull[,push]``) and sent
as ``Authorization: Bearer``. Tokens are cached per host and scope until they expire,
and concurrent requests share one token fetch.

With credentials, the token is requested the OAuth2 way (``POST`` with
``grant_type=password``, or ``refresh_token`` when only an identity token is known) and,
if the server does not offer that endpoint (404, 401, 400, or 405 with a user name),
with ``GET`` and Basic credentials, as Docker does. Without credentials the token is
requested anonymously.

``Credentials`` is a callback ``host -> (username, secret)``; an empty username with a
secret means the secret is an identity (refresh) token. ``StaticCredentials`` and
``credentials_from_auth_config`` build the common ones (a CRI ``AuthConfig``, the CRI
``registry.configs`` section).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from arun.errdefs import InvalidArgumentError, UnauthenticatedError, UnavailableError

log = logging.getLogger(__name__)

__all__ = [
    "AuthConfig",
    "Authorizer",
    "Challenge",
    "Credentials",
    "StaticCredentials",
    "basic_header",
    "credentials_from_auth_config",
    "parse_challenges",
]

# A callback host -> (username, secret); may be async.
Credentials = Callable[[str], "tuple[str, str] | Awaitable[tuple[str, str]]"]

CLIENT_ID = "arun-client"
# Tokens without expires_in live 60 s, as the token spec says.
DEFAULT_TOKEN_LIFETIME = 60.0
# Refresh a little early so a token does not expire in flight.
EXPIRY_MARGIN = 5.0


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer", "basic"
    params: Mapping[str, str] = field(default_factory=dict)


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(?:,|$)')
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Every challenge in the ``WWW-Authenticate`` header values (RFC 7235 syntax, quoted
    strings with escapes; several challenges may share one header value)."""
    out: list[Challenge] = []
    for value in values:
        pos = 0
        while pos < len(value):
            m = _SCHEME_RE.match(value, pos)
            if m is None:
                break
            scheme = m.group(1).lower()
            pos = m.end()
            params: dict[str, str] = {}
            while pos < len(value):
                pm = _PARAM_RE.match(value, pos)
                if pm is None:
                    break
                # A name followed by '=' is a parameter; a bare token starts the next challenge.
                raw = pm.group(2)
                val = re.sub(r"\\(.)", r"\1", raw) if raw is not None else pm.group(3)
                params[pm.group(1).lower()] = val
                pos = pm.end()
            out.append(Challenge(scheme, params))
            while pos < len(value) and value[pos] in ", ":
                pos += 1
    return out


def basic_header(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()


@dataclass(frozen=True)
class AuthConfig:
    """The fields of CRI's ``AuthConfig`` (and of the CRI ``registry.configs.*.auth``)."""

    username: str = ""
    password: str = ""
    auth: str = ""
    server_address: str = ""
    identity_token: str = ""
    registry_token: str = ""


def parse_auth_config(cfg: AuthConfig | None, host: str) -> tuple[str, str]:
    """``(username, secret)`` for ``host`` from ``cfg`` (containerd CRI's ``ParseAuth``)."""
    if cfg is None:
        return "", ""
    if cfg.server_address:
        addr = cfg.server_address if "://" in cfg.server_address else f"dummy://{cfg.server_address}"
        if urlsplit(addr).netloc != host:
            return "", ""
    if cfg.username:
        return cfg.username, cfg.password
    if cfg.identity_token:
        return "", cfg.identity_token
    if cfg.auth:
        try:
            decoded = base64.b64decode(cfg.auth).decode()
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgumentError("invalid auth: not base64") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidArgumentError("invalid decoded auth: expected 'user:password'")
        return user, password.strip("\x00")
    return "", ""


class StaticCredentials:
    """Credentials by host, e.g. from config: ``{"registry.example.com": ("u", "p")}``;
    ``"*"`` applies to any host."""

    def __init__(self, by_host: Mapping[str, tuple[str, str]]) -> None:
        self.by_host = dict(by_host)

    def __call__(self, host: str) -> tuple[str, str]:
        return self.by_host.get(host) or self.by_host.get("*") or ("", "")


def credentials_from_auth_config(
    cfg: AuthConfig | None, fallback: Mapping[str, AuthConfig] | None = None
) -> Credentials:
    """A CRI pull's credentials: the request's ``AuthConfig`` if given, else the configured
    one for the host (CRI ``registry.configs."<host>".auth``)."""

    def creds(host: str) -> tuple[str, str]:
        c = cfg if cfg is not None else (fallback or {}).get(host)
        return parse_auth_config(c, host)

    return creds


async def _call_credentials(creds: Credentials | None, host: str) -> tuple[str, str]:
    if creds is None:
        return "", ""
    res = creds(host)
    if inspect.isawaitable(res):
        res = await res
    user, secret = res
    return str(user or ""), str(secret or "")


@dataclass
class _Token:
    value: str
    expires: float


@dataclass
class _HostAuth:
    scheme: str
    realm: str = ""
    service: str = ""
    scopes: tuple[str, ...] = ()
    username: str = ""
    secret: str = ""
    # Bearer: cache by the space-joined scopes; values are futures so fetches are shared.
    tokens: dict[str, asyncio.Future[_Token]] = field(default_factory=dict)


def _merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """Scopes de-duplicated by resource with their actions unioned, sorted (containerd
    merges the challenge's scope with the request's the same way)."""
    by_resource: dict[str, list[str]] = {}
    plain: set[str] = set()
    for g in groups:
        for s in g:
            for one in s.split():
                parts = one.rsplit(":", 1)
                if len(parts) != 2 or ":" not in parts[0]:
                    plain.add(one)
                    continue
                acts = by_resource.setdefault(parts[0], [])
                for a in parts[1].split(","):
                    if a and a not in acts:
                        acts.append(a)
    out = {f"{r}:{','.join(sorted(a))}" for r, a in by_resource.items()} | plain
    return tuple(sorted(out))


class Authorizer:
    """Authorization for requests to registry hosts; one per pull/push (or shared by a
    daemon, since tokens are cached by host and scope)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: Credentials | None = None,
        *,
        header: Mapping[str, str] | None = None,
        ssl_for: Callable[[str], Any] | None = None,
    ) -> None:
        self.session = session
        self.credentials = credentials
        self.header = dict(header or {})
        self.ssl_for = ssl_for
        self._hosts: dict[str, _HostAuth] = {}
        self._lock = asyncio.Lock()

    async def authorization(self, host: str, scopes: Iterable[str]) -> str | None:
        """The ``Authorization`` header value for a request to ``host`` needing ``scopes``,
        or None when the host has not asked for authentication."""
        h = self._hosts.get(host)
        if h is None:
            return None
        if h.scheme == "basic":
            return basic_header(h.username, h.secret)
        if h.scheme == "bearer":
            token = await self._token(host, h, _merge_scopes(h.scopes, scopes))
            return f"Bearer {token}"
        return None

    async def on_unauthorized(self, host: str, response_headers: Any, sent_authorization: str | None) -> None:
        """Handle a 401 from ``host``. Returns when a retry may succeed; raises
        UnauthenticatedError when it cannot (no usable challenge, or the same credentials
        were already refused)."""
        challenges = parse_challenges(response_headers.getall("WWW-Authenticate", []))
        async with self._lock:
            for c in challenges:
                if c.scheme == "bearer":
                    if c.params.get("error") == "insufficient_scope" or (
                        sent_authorization is not None and sent_authorization.lower().startswith("bearer ")
                    ):
                        # The token we sent was refused: new credentials will not appear by retrying.
                        self._hosts.pop(host, None)
                        detail = c.params.get("error_description") or c.params.get("error") or "token refused"
                        raise UnauthenticatedError(f"authorization failed for {host!r}: {detail}")
                    realm = c.params.get("realm", "")
                    if not realm:
                        raise UnauthenticatedError(f"bearer challenge from {host!r} has no realm")
                    user, secret = await _call_credentials(self.credentials, host)
                    scope = c.params.get("scope", "")
                    self._hosts[host] = _HostAuth(
                        "bearer",
                        realm=realm,
                        service=c.params.get("service", ""),
                        scopes=tuple(scope.split()) if scope else (),
                        username=user,
                        secret=secret,
                    )
                    return
                if c.scheme == "basic":
                    if sent_authorization is not None and sent_authorization.lower().startswith("basic "):
                        self._hosts.pop(host, None)
                        raise UnauthenticatedError(f"authorization failed for {host!r}: credentials refused")
                    user, secret = await _call_credentials(self.credentials, host)
                    if not user or not secret:
                        raise UnauthenticatedError(
                            f"{host!r} requires authentication (Basic) and no credentials were given"
                        )
                    self._hosts[host] = _HostAuth("basic", username=user, secret=secret)
                    return
        schemes = sorted({c.scheme for c in challenges}) or ["none"]
        raise UnauthenticatedError(
            f"unauthorized by {host!r}: no supported auth scheme in challenge {schemes}"
        )

    async def _token(self, host: str, h: _HostAuth, scopes: tuple[str, ...]) -> str:
        key = " ".join(scopes)
        fut = h.tokens.get(key)
        if fut is not None:
            if not fut.done():
                return (await asyncio.shield(fut)).value
            if fut.exception() is None and fut.result().expires > time.monotonic():
                return fut.result().value
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        h.tokens[key] = fut
        try:
            token = await self._fetch_token(host, h, scopes)
        except BaseException as exc:
            h.tokens.pop(key, None)
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        fut.set_result(token)
        return token.value

    async def _fetch_token(self, host: str, h: _HostAuth, scopes: tuple[str, ...]) -> _Token:
        if h.secret:
            status, body = await self._oauth_post(h, scopes)
            if status == 200:
                return self._parse_token(body, h.realm, oauth=True)
            if status in (404, 401, 400) or (status == 405 and h.username):
                if not h.username:
                    raise UnauthenticatedError(
                        f"failed to fetch oauth token from {h.realm!r}: unexpected status {status}"
                    )
                status, body = await self._get_token(h, scopes, basic=True)
                if status == 200:
                    return self._parse_token(body, h.realm, oauth=False)
            raise self._token_error(h, status, body)
        status, body = await self._get_token(h, scopes, basic=False)
        if status == 200:
            return self._parse_token(body, h.realm, oauth=False)
        raise self._token_error(h, status, body)

    def _token_error(self, h: _HostAuth, status: int, body: bytes) -> Exception:
        text = body[:200].decode(errors="replace").strip()
        who = f"as {h.username!r}" if h.username else "anonymously"
        msg = f"failed to fetch token {who} from {h.realm!r}: unexpected status {status}"
        if text:
            msg += f": {text}"
        if status in (401, 403):
            return UnauthenticatedError(msg)
        if status >= 500 or status == 429:
            return UnavailableError(msg)
        return UnauthenticatedError(msg)

    async def _oauth_post(self, h: _HostAuth, scopes: tuple[str, ...]) -> tuple[int, bytes]:
        form = {"scope": " ".join(scopes), "service": h.service, "client_id": CLIENT_ID}
        if h.username:
            form.update(grant_type="password", username=h.username, password=h.secret)
        else:
            form.update(grant_type="refresh_token", refresh_token=h.secret)
        return await self._request("POST", h.realm, data=form)

    async def _get_token(self, h: _HostAuth, scopes: tuple[str, ...], *, basic: bool) -> tuple[int, bytes]:
        params: list[tuple[str, str]] = []
        if h.service:
            params.append(("service", h.service))
        params += [("scope", s) for s in scopes]
        headers = {"Authorization": basic_header(h.username, h.secret)} if basic else {}
        return await self._request("GET", h.realm, params=params, headers=headers)

    async def _request(
        self,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        hdrs = {**self.header, **(headers or {})}
        ssl = self.ssl_for(urlsplit(url).netloc) if self.ssl_for else None
        try:
            async with self.session.request(
                method,
                url,
                data=data,
                params=params,
                headers=hdrs,
                ssl=ssl if ssl is not None else True,
                timeout=aiohttp.ClientTimeout(total=60),
            ) as resp:
                return resp.status, await resp.content.read(1 << 20)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UnavailableError(f"token request to {url!r} failed: {exc}") from exc

    def _parse_token(self, body: bytes, realm: str, *, oauth: bool) -> _Token:
        import json

        try:
            doc = json.loads(body)
        except ValueError:
            raise UnauthenticatedError(f"token server {realm!r} answered with invalid JSON") from None
        if not isinstance(doc, dict):
            raise UnauthenticatedError(f"token server {realm!r} answered with invalid JSON")
        value = doc.get("access_token") if oauth else (doc.get("token") or doc.get("access_token"))
        if oauth and not value:
            value = doc.get("token")
        if not isinstance(value, str) or not value:
            raise UnauthenticatedError(f"token server {realm!r} returned no token")
        expires_in = doc.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else None
        lifetime = lifetime or DEFAULT_TOKEN_LIFETIME
        return _Token(value, time.monotonic() + max(lifetime - EXPIRY_MARGIN, 1.0))
