"""One socket write per loop turn for grpclib's server connections.

grpclib writes every HTTP/2 frame group as soon as h2 produces it: a unary
answer is three ``transport.write`` calls (HEADERS, DATA, trailing HEADERS),
often with a WINDOW_UPDATE before them, all made in the same step of the
handler's task. Each is a ``send`` on the socket and each wakes the client's
reader. ``Coalescing`` wraps grpclib's protocol and hands it a transport that
collects the writes of one loop turn and passes them on as one write at the
end of it (``loop.call_soon``): the same bytes in the same order, fewer
syscalls and wake-ups.

What is written while grpclib handles received bytes (``data_received``) —
typically the PING ACK for the ping a grpc-go client sends after each answer,
which arrives in the same read as its next request — is held until the end
of that call, and its flush scheduled only then: after the steps of the
request tasks that ``data_received`` started. Those steps run first in the
next loop turn and their answer joins the PING ACK in one write, instead of
the ACK going out alone one callback earlier (one ``send`` and one client
wake-up fewer per call). The bytes and their order are unchanged.

Only the public asyncio ``Protocol``/``Transport`` interface is used, so
grpclib's internals are untouched.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

# Past this many gathered bytes a write goes out at once, so that a large stream (Content
# Read) still meets the socket's back-pressure (pause_writing) as it did.
FLUSH_AT = 64 * 1024


class CoalescingTransport(asyncio.Transport):
    """``transport`` with writes gathered until the end of the current loop turn."""

    __slots__ = ("_held", "_loop", "_pending", "_pending_size", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._scheduled = False
        # Inside the protocol's data_received: schedule the flush at release(), not at write.
        self._held = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        if self._pending_size >= FLUSH_AT:
            self.flush()
        elif not self._scheduled and not self._held:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def hold(self) -> None:
        """Until ``release()``, gather writes without scheduling their flush."""
        self._held = True

    def release(self) -> None:
        """Schedule the flush of what came since ``hold()``, behind the callbacks queued meanwhile."""
        self._held = False
        if self._pending and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Pass what was written so far on to the socket's transport."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._pending_size = 0
        if self._transport.is_closing():
            # Closed under us (peer gone, server closing): there is no one to write to, and
            # uvloop would raise from this callback where no caller can see it.
            return
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def abort_pending(self) -> None:
        """Drop what was not written yet (the connection is gone)."""
        self._pending = []
        self._pending_size = 0

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self.abort_pending()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._pending_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class Coalescing(asyncio.Protocol):
    """``inner`` (grpclib's H2Protocol) seeing a ``CoalescingTransport`` instead of the socket's."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self.inner = inner
        self.transport: CoalescingTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = CoalescingTransport(cast(asyncio.Transport, transport), asyncio.get_running_loop())
        self.inner.connection_made(self.transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            self.inner.data_received(data)
            return
        transport.hold()
        try:
            self.inner.data_received(data)
        finally:
            transport.release()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport.abort_pending()
        self.inner.connection_lost(exc)
