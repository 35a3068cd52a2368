"""Per-request context, error mapping and logging around every gRPC method.

``wrap()`` turns a grpclib method handler into one that, inside the request's
own task:

- refuses new work with UNAVAILABLE once the server is draining;
- sets the request context: namespace from ``containerd-namespace``, a
  request id, the method name, and the deadline from ``grpc-timeout``;
- logs one start line and one end line (mutations at INFO, reads at DEBUG);
- maps errors through ``errdefs.grpc`` — the one mapping — to a grpclib
  status; anything unexpected becomes UNKNOWN "internal error (request <id>)"
  on the wire and is logged once, with its traceback, here.

``Tracker`` counts requests in flight so shutdown can drain them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from arun import deadline, leasectx, namespaces
from arun import log as arun_log
from arun.errdefs import UnknownError
from arun.errdefs import grpc as errgrpc

log = logging.getLogger(__name__)

MethodFunc = Callable[[Any], Awaitable[None]]

# Method names (the part after the last '/') that only read state: logged at DEBUG.
_READ_PREFIXES = (
    "Get",
    "List",
    "Stream",
    "Watch",
    "Check",
    "Read",
    "Subscribe",
    "Wait",
    "Version",
    "Status",
    "Info",
    "Server",
    "Plugins",
    "PluginInfo",
    "Pids",
    "Usage",
    "Stat",
    "Mounts",
    "RuntimeConfig",
)
_READ_SUFFIXES = ("Status", "Stats", "Info", "Descriptors")


def is_read(path: str) -> bool:
    """Whether the RPC at ``path`` (``/pkg.Service/Method``) only reads state."""
    name = path.rsplit("/", 1)[-1]
    return name.startswith(_READ_PREFIXES) or name.endswith(_READ_SUFFIXES)


def new_request_id() -> str:
    """16 hex digits; unique enough to find a request in the log (not a secret, so no urandom call)."""
    return f"{random.getrandbits(64):016x}"


class Tracker:
    """Requests in flight, and whether new ones are still accepted."""

    def __init__(self) -> None:
        self.active = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    async def drain(self, grace: float) -> bool:
        """Refuse new requests, then wait up to ``grace`` seconds for the running ones; True if idle."""
        self.draining = True
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


def status_of(exc: BaseException, request_id: str) -> tuple[Status, str]:
    """The grpclib status and wire message for an error raised by a handler."""
    code = errgrpc.code_of(exc)
    if code == errgrpc.UNKNOWN and not isinstance(exc, UnknownError):
        return Status.UNKNOWN, f"internal error (request {request_id})"
    return Status(code), errgrpc.message_of(exc)


def _log_end(
    level: int, outcome: Status | None, message: str | None, unexpected: BaseException | None, start: float
) -> None:
    extra: dict[str, object] = {"duration_ms": round((time.monotonic() - start) * 1000, 3)}
    if outcome is None:
        log.log(level, "request cancelled", extra=extra)
    elif outcome is Status.OK:
        log.log(level, "request done", extra={"status": outcome.name, **extra})
    else:
        extra = {"status": outcome.name, "error": message, **extra}
        if unexpected is not None:
            log.error("request failed", exc_info=unexpected, extra=extra)
        else:
            log.log(level, "request failed", extra=extra)


def wrap(path: str, func: MethodFunc, tracker: Tracker | None = None) -> MethodFunc:
    """``func`` with the request context, logging and error mapping of this module."""
    read = is_read(path)
    level = logging.DEBUG if read else logging.INFO

    # Each request runs in its own task (grpclib starts one per stream), so the context set
    # here — request id, method, namespace, lease, deadline — ends with the request; nothing
    # needs resetting.
    async def handler(stream: Any) -> None:
        if tracker is not None and tracker.draining:
            raise GRPCError(Status.UNAVAILABLE, "server is shutting down")
        rid = new_request_id()
        arun_log.request_id.set(rid)
        arun_log.method.set(path)
        md = stream.metadata
        if md is not None:
            namespaces.set_current(md.get(namespaces.GRPC_HEADER))
            leasectx.set_current(md.get(leasectx.GRPC_HEADER))
        else:
            namespaces.set_current(None)
            leasectx.set_current(None)
        grpc_deadline = stream.deadline
        timeout = grpc_deadline.time_remaining() if grpc_deadline is not None else None
        deadline.set_for_task(timeout)
        logged = log.isEnabledFor(level)
        if logged:
            log.log(level, "request started", extra={} if timeout is None else {"timeout": round(timeout, 3)})
        start = time.monotonic()
        outcome: Status | None = None
        message: str | None = None
        unexpected: BaseException | None = None
        if tracker is not None:
            tracker.enter()
        try:
            await func(stream)
            outcome = Status.OK
        except GRPCError as e:
            outcome, message = e.status, e.message
            raise
        except Exception as e:
            outcome, message = status_of(e, rid)
            if outcome in (Status.UNKNOWN, Status.INTERNAL):
                unexpected = e
            raise GRPCError(outcome, message) from e
        finally:
            if tracker is not None:
                tracker.leave()
            if logged or unexpected is not None:
                _log_end(level, outcome, message, unexpected, start)

    handler.__name__ = getattr(func, "__name__", "handler")
    return handler


__all__ = ["Tracker", "is_read", "new_request_id", "status_of", "wrap"]
