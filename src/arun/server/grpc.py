"""The daemon's gRPC server (grpclib) on its unix socket.

Start-up collects every loaded ``io.containerd.grpc.v1`` plugin whose instance
has ``register(server)`` (see ``arun.plugin.grpc``) into a ``ServiceTable``.
The table serves every method of every service in the generated API: the
plugin's handler where one was registered, UNIMPLEMENTED otherwise, and a
path that no proto defines also answers UNIMPLEMENTED (as grpc-go's "unknown
service") — always as a proper gRPC response with a content-type, which is
what grpc-go clients (crictl, kubelet, ctr) need to read the status.

Every handler is wrapped by ``middleware.wrap`` (context, logging, errors).
grpclib's server runs on arun's own HTTP/2 connection (``arun.server.http2``); with
``ARUN_GRPC_H2=h2`` in the environment it runs on h2's ``H2Connection`` as grpclib ships it.
Shutdown has stages the daemon drives across all its servers:
``stop_accepting()``, ``drain(grace)``, ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2
from grpclib.const import Cardinality, Handler
from grpclib.protocol import H2Protocol
from grpclib.server import Server

from arun.errdefs import AlreadyExistsError, InvalidArgumentError, UnimplementedError
from arun.plugin.context import PluginSet
from arun.plugin.grpc import GRPCService, Servable, is_fallback
from arun.plugin.types import PluginType
from arun.server import catalog, coalesce, h2trace, middleware, sockets
from arun.server.http2.protocol import LeanH2Protocol

log = logging.getLogger(__name__)

# Which HTTP/2 connection grpclib's server runs on: ours (arun.server.http2, the default) or, with
# ARUN_GRPC_H2=h2, h2's H2Connection as grpclib ships it (for A/B measurements and as a way back).
H2_ENV = "ARUN_GRPC_H2"


def lean_h2() -> bool:
    """Whether new servers use arun's own HTTP/2 connection (see ``H2_ENV``)."""
    return os.environ.get(H2_ENV, "") != "h2"


class ServiceTable:
    """Handlers by method path; the ``GRPCRegistrar`` that plugins' ``register`` receives."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._owners: dict[str, str] = {}
        self._fallbacks: dict[str, Handler] = {}
        # Who is registering now (a plugin URI), for conflict messages.
        self.owner = ""

    def add(self, servicer: Servable, /) -> None:
        mapping = servicer.__mapping__()
        for path, handler in mapping.items():
            if not isinstance(handler, Handler):
                raise InvalidArgumentError(f"{self.owner or servicer!r}: {path!r} is not a grpclib Handler")
            if is_fallback(handler.func):
                self._fallbacks.setdefault(path, handler)
                continue
            if path in self._handlers:
                raise AlreadyExistsError(
                    f"gRPC method {path} is served by both {self._owners[path]!r} and {self.owner!r}"
                )
            self._handlers[path] = handler
            self._owners[path] = self.owner

    def register_plugins(self, plugins: PluginSet) -> None:
        """Let every loaded gRPC plugin with ``register(server)`` add its servicers."""
        for p in plugins.ordered:
            if p.registration.type != PluginType.GRPC or not p.ok:
                continue
            if isinstance(p.instance, GRPCService):
                self.owner = p.uri
                try:
                    p.instance.register(self)
                finally:
                    self.owner = ""

    def served(self) -> dict[str, str]:
        """Method paths with a real handler, and the plugin serving each."""
        return dict(self._owners)

    def routes(
        self, services: Iterable[catalog.Service] | None = None, tracker: middleware.Tracker | None = None
    ) -> Routes:
        """The wrapped handlers grpclib dispatches on: real ones over fallbacks for ``services``."""
        if services is None:
            services = catalog.grpc_services()
        merged = {**catalog.fallback_handlers(services), **self._fallbacks, **self._handlers}
        wrapped = {
            path: Handler(middleware.wrap(path, h.func, tracker), h.cardinality, h.request_type, h.reply_type)
            for path, h in merged.items()
        }
        return Routes(wrapped, tracker)


class Routes(dict[str, Handler]):
    """grpclib's method table, answering UNIMPLEMENTED for paths it does not know.

    grpclib looks a request's ``:path`` up with ``mapping.get(path)`` and, on a
    miss, answers without a content-type, which grpc-go reports as "Unknown:
    missing HTTP content-type"; this table never misses.
    """

    def __init__(self, handlers: Mapping[str, Handler], tracker: middleware.Tracker | None) -> None:
        super().__init__(handlers)
        self._tracker = tracker
        self._services = {p.rsplit("/", 1)[0].lstrip("/") for p in handlers}

    def get(self, path: str, default: Any = None) -> Handler:
        found = super().get(path)
        if found is not None:
            return found
        service, _, name = path.lstrip("/").rpartition("/")
        if service in self._services:
            message = f"unknown method {name} for service {service}"
        else:
            message = f"unknown service {service or path}"

        async def unknown(stream: Any) -> None:
            raise UnimplementedError(message)

        return Handler(
            middleware.wrap(path, unknown, self._tracker),
            Cardinality.UNARY_UNARY,
            empty_pb2.Empty,
            empty_pb2.Empty,
        )


class _Table:
    def __init__(self, routes: Routes) -> None:
        self._routes = routes

    def __mapping__(self) -> Routes:
        return self._routes


class _Server(Server):
    """grpclib's Server, remembering its connections so ``close()`` can hang them up.

    grpclib's own close cancels the running handlers but leaves the client
    connections open; a client would then wait for an answer that never comes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()
        self._lean = lean_h2()

    def _protocol_factory(self) -> H2Protocol:
        proto = super()._protocol_factory()
        if self._lean:
            proto = LeanH2Protocol(proto.handler, proto.config, proto.h2_config)
        self._protocols.add(proto)
        # One socket write per loop turn instead of one per frame group (see coalesce).
        return coalesce.Coalescing(proto)  # type: ignore[return-value]

    def hang_up(self) -> None:
        for proto in list(self._protocols):
            conn = getattr(proto, "connection", None)
            if conn is not None:
                conn.close()


class GRPCServer:
    """grpclib on a unix socket, serving a ServiceTable."""

    def __init__(self, table: ServiceTable, services: Iterable[catalog.Service] | None = None) -> None:
        self.tracker = middleware.Tracker()
        self.routes = table.routes(services, self.tracker)
        self.path: Path | None = None
        self._inode: int | None = None
        self._server: _Server | None = None

    async def start(self, path: str | Path, *, uid: int = 0, gid: int = 0) -> None:
        """Listen on ``path``: refused if a live daemon holds it, a stale socket file is replaced."""
        p = Path(path)
        await sockets.prepare(p)
        server = _Server([_Table(self.routes)])
        if not server._lean:
            # h2 computes a repr of every received frame for a trace log nobody reads (see h2trace).
            h2trace.install()
        # grpclib copies the handlers into a plain dict; put the never-missing table back.
        if not isinstance(getattr(server, "_mapping", None), dict):
            raise RuntimeError("grpclib Server has no _mapping: update the unknown-method fallback")
        server._mapping = self.routes
        await server.start(path=str(p))
        self._server = server
        self.path = p
        self._inode = sockets.secure(p, uid, gid)
        log.info(
            "serving gRPC",
            extra={"address": str(p), "methods": len(self.routes), "http2": "arun" if server._lean else "h2"},
        )

    def stop_accepting(self) -> None:
        """Remove the socket file (no new connections) and refuse new requests on open ones."""
        self.tracker.draining = True
        if self.path is not None:
            sockets.remove(self.path, self._inode)

    async def drain(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds for requests in flight; True if none is left."""
        idle = await self.tracker.drain(grace)
        if not idle:
            log.warning("cancelling %d gRPC requests still running after %.1fs", self.tracker.active, grace)
        return idle

    async def close(self) -> None:
        """Cancel what still runs and close the listener."""
        if self._server is None:
            return
        self.stop_accepting()
        self._server.close()
        self._server.hang_up()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._server.wait_closed()
        self._server = None
