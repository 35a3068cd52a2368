"""A recording, fault-injecting HTTP proxy in front of a registry, for tests.

Every request is forwarded to the upstream registry unless a rule takes it. Rules match
on method and a path regex and can answer with a status and body, cut a body short
(the connection drops after N bytes), stall (send N bytes, then nothing), replace a body,
ignore ``Range``, or redirect to a second URL on the proxy (``/_redirect/…``) that serves
the same content — so tests can exercise retries, resume, stall detection, redirects and
bad registries against real registry content. ``requests`` records what came in.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

__all__ = ["FaultProxy", "Recorded", "Rule"]

Action = Literal["status", "cut", "stall", "replace", "ignore_range", "redirect", "delay"]
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass
class Rule:
    """``times`` None: every matching request; otherwise only the first ``times``."""

    action: Action
    method: str = "GET"
    path: str = ".*"
    times: int | None = None
    status: int = 500
    body: bytes = b""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    after: int = 0  # cut / stall: bytes sent first
    stall_for: float = 3600.0  # stall: how long; delay: seconds before forwarding
    # Only requests carrying a Range header (for resume tests).
    with_range: bool | None = None
    hits: int = 0

    def matches(self, request: web.Request) -> bool:
        if self.method != "*" and request.method != self.method:
            return False
        if not re.search(self.path, request.path):
            return False
        if self.with_range is not None and ("Range" in request.headers) != self.with_range:
            return False
        return self.times is None or self.hits < self.times


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.requests: list[Recorded] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()
        # Requests being served now, and the most at once, per path pattern given to track().
        self.inflight: dict[str, int] = {}
        self.max_inflight: dict[str, int] = {}

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def track(self, pattern: str) -> None:
        """Count concurrent requests whose path matches ``pattern`` (see ``max_inflight``)."""
        self.inflight.setdefault(pattern, 0)
        self.max_inflight.setdefault(pattern, 0)

    def count(self, method: str, pattern: str, predicate: Callable[[Recorded], bool] | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if r.method == method and re.search(pattern, r.path) and (predicate is None or predicate(r))
        )

    async def start(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(getattr(server, "sockets", [])[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _rule_for(self, request: web.Request) -> Rule | None:
        for rule in self.rules:
            if rule.matches(request):
                rule.hits += 1
                return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        redirected = path.startswith("/_redirect/")
        if redirected:
            path = path[len("/_redirect") :]
        rule = None if redirected else self._rule_for(request)
        status_holder = [0]
        tracked = [p for p in self.inflight if re.search(p, request.path)]
        for p in tracked:
            self.inflight[p] += 1
            self.max_inflight[p] = max(self.max_inflight[p], self.inflight[p])
        try:
            if rule is not None and rule.action == "delay":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), rule.stall_for)
                rule = None
            return await self._serve(request, path, rule, status_holder)
        finally:
            for p in tracked:
                self.inflight[p] -= 1
            self.requests.append(
                Recorded(
                    request.method,
                    request.path,
                    request.query_string,
                    dict(request.headers),
                    status_holder[0],
                )
            )

    async def _serve(
        self, request: web.Request, path: str, rule: Rule | None, status: list[int]
    ) -> web.StreamResponse:
        if rule is not None and rule.action == "status":
            status[0] = rule.status
            return web.Response(
                status=rule.status,
                body=rule.body,
                headers={"Content-Type": rule.content_type, **rule.headers},
            )
        if rule is not None and rule.action == "redirect":
            status[0] = rule.status if rule.status in (301, 302, 303, 307, 308) else 307
            qs = f"?{request.query_string}" if request.query_string else ""
            return web.Response(status=status[0], headers={"Location": f"/_redirect{path}{qs}"})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["Host"] = self.upstream.split("://", 1)[1]
        if rule is not None and rule.action == "ignore_range":
            headers.pop("Range", None)
        body = await request.read()
        assert self._session is not None
        url = f"{self.upstream}{path}"
        async with self._session.request(
            request.method,
            url,
            params=request.query,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as up:
            data = await up.read()
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            loc = out_headers.get("Location")
            if loc and loc.startswith(self.upstream):
                out_headers["Location"] = loc[len(self.upstream) :]
            up_status = up.status
            if rule is not None and rule.action == "replace":
                # The replacement is served as a success, whatever upstream said.
                up_status = 200
                data = rule.body
                out_headers["Content-Type"] = rule.content_type
                out_headers.update(rule.headers)
            status[0] = up_status
            if rule is None or rule.action not in ("cut", "stall"):
                if request.method == "HEAD":
                    resp = web.Response(status=up_status, headers=out_headers)
                    if "Content-Length" in up.headers and rule is None:
                        resp.headers["Content-Length"] = up.headers["Content-Length"]
                    elif rule is not None and rule.action == "replace":
                        resp.headers["Content-Length"] = str(len(data))
                    return resp
                return web.Response(status=up_status, body=data, headers=out_headers)
        # cut / stall: announce the whole body, send part of it, then drop or hang.
        stream = web.StreamResponse(status=up.status, headers=out_headers)
        stream.content_length = len(data)
        await stream.prepare(request)
        await stream.write(data[: rule.after])
        if rule.action == "stall":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), rule.stall_for)
        transport = request.transport
        if transport is not None:
            transport.abort()
        return stream
