"""The daemon's ttrpc server on ``<grpc address>.ttrpc`` (shims publish their events here).

Collects every loaded plugin with ``register_ttrpc(server)`` (see
``arun.plugin.ttrpc``) onto an ``arun.ttrpc.Server`` whose hooks give each
request the same context as the gRPC middleware: namespace from the
``containerd-namespace-ttrpc`` metadata, deadline from ``timeout_nano``, a
request id and the method on log records, one start and one end line, and
status codes from the one errdefs mapping (an unexpected error is UNKNOWN
"internal error (request <id>)"; the ttrpc server logs its traceback once).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from arun import deadline, namespaces
from arun import log as arun_log
from arun.plugin.context import PluginSet
from arun.plugin.ttrpc import TTRPCService
from arun.server import middleware, sockets
from arun.ttrpc import RequestInfo, Server, StatusError

log = logging.getLogger(__name__)


def to_status(exc: BaseException) -> tuple[int, str]:
    status, message = middleware.status_of(exc, arun_log.request_id.get() or "-")
    return status.value, message


@contextlib.contextmanager
def request_context(info: RequestInfo) -> Iterator[None]:
    """Per request, inside its task: context for stores and logs, and the start/end lines."""
    path = f"/{info.service}/{info.method}"
    arun_log.request_id.set(middleware.new_request_id())
    arun_log.method.set(path)
    namespaces.set_current(info.metadata.first(namespaces.TTRPC_HEADER))
    level = logging.DEBUG if middleware.is_read(path) else logging.INFO
    log.log(level, "request started", extra={"timeout": info.timeout} if info.timeout is not None else {})
    start = time.monotonic()
    try:
        with deadline.use(info.timeout):
            yield
    except Exception as e:
        code, message = (e.code, e.message) if isinstance(e, StatusError) else to_status(e)
        log.log(
            level,
            "request failed",
            extra={
                "code": code,
                "error": message,
                "duration_ms": round((time.monotonic() - start) * 1000, 3),
            },
        )
        raise
    except BaseException:
        log.log(
            level, "request cancelled", extra={"duration_ms": round((time.monotonic() - start) * 1000, 3)}
        )
        raise
    log.log(level, "request done", extra={"duration_ms": round((time.monotonic() - start) * 1000, 3)})


class TTRPCServer:
    def __init__(self) -> None:
        self.server = Server(to_status=to_status, request_context=request_context)
        self.path: Path | None = None
        self._inode: int | None = None
        self._owners: dict[str, str] = {}
        self._owner = ""

    def register(self, service: Any, handler: object, /) -> None:
        """The TTRPCRegistrar plugins receive."""
        before = set(self.server.services)
        self.server.register(service, handler)
        for name in set(self.server.services) - before:
            self._owners[name] = self._owner

    def register_plugins(self, plugins: PluginSet) -> None:
        for p in plugins.ordered:
            if p.ok and isinstance(p.instance, TTRPCService):
                self._owner = p.uri
                try:
                    p.instance.register_ttrpc(self)
                finally:
                    self._owner = ""

    def served(self) -> dict[str, str]:
        """Service names and the plugin serving each."""
        return dict(self._owners)

    async def start(self, path: str | Path, *, uid: int = 0, gid: int = 0) -> None:
        p = Path(path)
        await sockets.prepare(p)
        await self.server.serve_unix(str(p), mode=sockets.SOCKET_MODE)
        self.path = p
        self._inode = sockets.secure(p, uid, gid)
        log.info("serving ttrpc", extra={"address": str(p), "services": len(self.server.services)})

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish for ``grace`` seconds, cancel the rest."""
        if self.path is not None:
            sockets.remove(self.path, self._inode)
        await self.server.shutdown(grace)

    async def close(self) -> None:
        if self.path is not None:
            sockets.remove(self.path, self._inode)
        await self.server.close()
