"""The CRI streaming server: the HTTP endpoint behind the URLs of Exec, Attach and PortForward.

The CRI plugin owns one :class:`StreamingServer`. Its RPC handlers validate the
request and call :meth:`StreamingServer.get_exec` (``get_attach``,
``get_port_forward``), which store the request under a single-use token and
return the response message with the URL, ``http://<address>:<port>/exec/<token>``
(``/attach/``, ``/portforward/``), as containerd builds them.

A client then connects to the URL with GET or POST and upgrades the connection:

* to SPDY/3.1 (``Connection: Upgrade``, ``Upgrade: SPDY/3.1`` and a
  ``X-Stream-Protocol-Version`` list): remotecommand ``v4``, ``v3``, ``v2`` and
  ``channel.k8s.io``, port-forward ``portforward.k8s.io`` — what crictl, critest
  and kubelet's proxy use by default;
* to WebSocket (``Sec-WebSocket-Protocol``): ``v5.channel.k8s.io``,
  ``v4.channel.k8s.io``, ``channel.k8s.io`` and the base64 variants for exec and
  attach; ``SPDY/3.1+portforward.k8s.io`` (SPDY tunnelled in WebSocket, what
  client-go's WebSocket port-forward dialer asks for) and ``v4.channel.k8s.io``
  channel pairs for port-forward.

An unknown, used or expired token gets ``404 page not found``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web

from arun import errdefs
from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.streaming import portforward, remotecommand, status, upgrade
from arun.cri.streaming.cache import RequestCache
from arun.cri.streaming.config import StreamingConfig
from arun.cri.streaming.handshake import negotiate_spdy
from arun.cri.streaming.runtime import DuplexStream, StreamingRuntime
from arun.cri.streaming.session import SpdySession
from arun.cri.streaming.websocket import ChannelMux

log = logging.getLogger(__name__)

_Req = api_pb2.ExecRequest | api_pb2.AttachRequest | api_pb2.PortForwardRequest
R = TypeVar("R", api_pb2.ExecRequest, api_pb2.AttachRequest, api_pb2.PortForwardRequest)


def _host_for_url(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def validate_exec(req: api_pb2.ExecRequest) -> None:
    if not req.container_id:
        raise errdefs.InvalidArgumentError("missing required container_id")
    if req.tty and req.stderr:
        raise errdefs.InvalidArgumentError("tty and stderr cannot both be true")
    if not (req.stdin or req.stdout or req.stderr):
        raise errdefs.InvalidArgumentError("one of stdin, stdout, or stderr must be set")


def validate_attach(req: api_pb2.AttachRequest) -> None:
    if not req.container_id:
        raise errdefs.InvalidArgumentError("missing required container_id")
    if req.tty and req.stderr:
        raise errdefs.InvalidArgumentError("tty and stderr cannot both be true")
    if not (req.stdin or req.stdout or req.stderr):
        raise errdefs.InvalidArgumentError("one of stdin, stdout, and stderr must be set")


def validate_port_forward(req: api_pb2.PortForwardRequest) -> None:
    if not req.pod_sandbox_id:
        raise errdefs.InvalidArgumentError("missing required pod_sandbox_id")
    for port in req.port:
        if not 1 <= port <= 0xFFFF:
            raise errdefs.InvalidArgumentError(f"invalid port {port}")


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, errdefs.ArunError):
        return exc.message
    return str(exc) or type(exc).__name__


@dataclass
class _Live:
    """Connections being served, so that stop() can end them."""

    sessions: set[SpdySession] = field(default_factory=set)
    muxes: set[ChannelMux] = field(default_factory=set)
    handlers: set[asyncio.Task[object]] = field(default_factory=set)


class StreamingServer:
    """Serves exec, attach and port-forward for one runtime."""

    def __init__(
        self,
        runtime: StreamingRuntime,
        config: StreamingConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtime = runtime
        self._config = config or StreamingConfig()
        self._cache: RequestCache[_Req] = RequestCache(
            ttl=self._config.token_ttl, max_in_flight=self._config.max_in_flight, clock=clock
        )
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = self._config.base_url.rstrip("/") if self._config.base_url else None
        self._live = _Live()

    @property
    def config(self) -> StreamingConfig:
        return self._config

    # ----- lifecycle
    def application(self) -> web.Application:
        """The aiohttp application (routes GET and POST of /exec, /attach, /portforward)."""
        app = web.Application()
        for name, handler in (
            ("exec", self._serve_exec),
            ("attach", self._serve_attach),
            ("portforward", self._serve_port_forward),
        ):
            app.router.add_route("GET", f"/{name}/{{token}}", handler)
            app.router.add_route("POST", f"/{name}/{{token}}", handler)
        return app

    async def start(self) -> None:
        """Listen; afterwards :attr:`url` holds the base URL with the actual port."""
        if self._runner is not None:
            raise errdefs.FailedPreconditionError("streaming server already started")
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner,
            self._config.address or None,
            self._config.port,
            ssl_context=self._config.ssl_context,
            reuse_address=True,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self._base_url is None:
            host, port = runner.addresses[0][:2]
            scheme = "https" if self._config.ssl_context is not None else "http"
            self._base_url = f"{scheme}://{_host_for_url(host)}:{port}"
        log.info("streaming server listening on %s", self._base_url)

    async def stop(self) -> None:
        """Stop listening and end every open streaming connection."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for session in list(self._live.sessions):
            session.abort()
        for mux in list(self._live.muxes):
            await mux.close()
        handlers = list(self._live.handlers)
        for task in handlers:
            task.cancel()
        for task in handlers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await runner.cleanup()
        if self._config.base_url is None:
            self._base_url = None

    async def __aenter__(self) -> StreamingServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The base URL of the streaming endpoints, without a trailing slash."""
        if self._base_url is None:
            raise errdefs.FailedPreconditionError("streaming server is not started")
        return self._base_url

    # ----- the RPC side
    def _build_url(self, method: str, req: _Req) -> str:
        base = self.url  # first, so an unstarted server stores nothing
        token = self._cache.insert(req)
        return f"{base}/{method}/{token}"

    def get_exec(self, req: api_pb2.ExecRequest) -> api_pb2.ExecResponse:
        """Validate an Exec request and return the URL that serves it."""
        validate_exec(req)
        stored = api_pb2.ExecRequest()
        stored.CopyFrom(req)
        return api_pb2.ExecResponse(url=self._build_url("exec", stored))

    def get_attach(self, req: api_pb2.AttachRequest) -> api_pb2.AttachResponse:
        validate_attach(req)
        stored = api_pb2.AttachRequest()
        stored.CopyFrom(req)
        return api_pb2.AttachResponse(url=self._build_url("attach", stored))

    def get_port_forward(self, req: api_pb2.PortForwardRequest) -> api_pb2.PortForwardResponse:
        validate_port_forward(req)
        stored = api_pb2.PortForwardRequest()
        stored.CopyFrom(req)
        return api_pb2.PortForwardResponse(url=self._build_url("portforward", stored))

    # ----- the HTTP side
    def _consume(self, request: web.Request, kind: type[R]) -> R | None:
        found = self._cache.consume(request.match_info["token"])
        return found if isinstance(found, kind) else None

    @staticmethod
    def _not_found() -> web.Response:
        return web.Response(status=404, text="404 page not found\n")

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """Register the running handler so that stop() can cancel it."""
        task = asyncio.current_task()
        if task is not None:
            self._live.handlers.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._live.handlers.discard(task)

    async def _remotecommand(
        self, request: web.Request, options: remotecommand.StreamOptions, command: remotecommand.Command
    ) -> web.StreamResponse:
        timeouts = self._config.timeouts
        if upgrade.is_websocket_request(request):
            return await remotecommand.serve_websocket(request, options, command, timeouts, self._live.muxes)
        chosen = negotiate_spdy(request, self._config.remotecommand_protocols)
        if isinstance(chosen, web.Response):
            return chosen
        return await remotecommand.serve_spdy(
            request, chosen, options, command, timeouts, self._live.sessions
        )

    async def _serve_exec(self, request: web.Request) -> web.StreamResponse:
        req = self._consume(request, api_pb2.ExecRequest)
        if req is None:
            return self._not_found()
        cmd = list(req.cmd)

        async def command(streams: remotecommand.CommandStreams) -> status.Status:
            try:
                code = await self._runtime.exec(
                    req.container_id,
                    cmd,
                    streams.stdin,
                    streams.stdout,
                    streams.stderr,
                    req.tty,
                    streams.resize,
                )
            except Exception as exc:
                log.info("exec in container %r failed: %s", req.container_id, exc)
                return status.internal_error(f"error executing command in container: {_error_text(exc)}")
            return status.success() if code == 0 else status.exit_code(code, cmd)

        with self._tracked():
            options = remotecommand.StreamOptions(req.stdin, req.stdout, req.stderr, req.tty)
            return await self._remotecommand(request, options, command)

    async def _serve_attach(self, request: web.Request) -> web.StreamResponse:
        req = self._consume(request, api_pb2.AttachRequest)
        if req is None:
            return self._not_found()

        async def command(streams: remotecommand.CommandStreams) -> status.Status:
            try:
                await self._runtime.attach(
                    req.container_id, streams.stdin, streams.stdout, streams.stderr, req.tty, streams.resize
                )
            except Exception as exc:
                log.info("attach to container %r failed: %s", req.container_id, exc)
                return status.internal_error(f"error attaching to container: {_error_text(exc)}")
            return status.success()

        with self._tracked():
            options = remotecommand.StreamOptions(req.stdin, req.stdout, req.stderr, req.tty)
            return await self._remotecommand(request, options, command)

    async def _serve_port_forward(self, request: web.Request) -> web.StreamResponse:
        req = self._consume(request, api_pb2.PortForwardRequest)
        if req is None:
            return self._not_found()
        sandbox_id = req.pod_sandbox_id

        async def forward(port: int, stream: DuplexStream) -> None:
            await self._runtime.port_forward(sandbox_id, port, stream)

        timeouts = self._config.timeouts
        with self._tracked():
            if upgrade.is_websocket_request(request):
                return await portforward.serve_websocket(
                    request,
                    list(req.port),
                    forward,
                    timeouts,
                    sandbox_id,
                    self._live.muxes,
                    self._live.sessions,
                )
            chosen = negotiate_spdy(request, self._config.portforward_protocols)
            if isinstance(chosen, web.Response):
                return chosen
            return await portforward.serve_spdy(
                request, chosen, sandbox_id, forward, timeouts, self._live.sessions
            )
