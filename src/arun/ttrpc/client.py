"""The asyncio ttrpc client.

One :class:`asyncio.BufferedProtocol` per connection reads and feeds the sans-IO
:class:`~arun.ttrpc.connection.Connection`; every frame goes out through
``transport.write`` from the loop, so frames never interleave and stream ids reach
the wire in increasing order. Pending unary calls are futures keyed by stream id;
the client creates no tasks of its own.

* Deadlines: an explicit ``timeout`` (seconds), else the ``deadline`` hook (arun wires
  its deadline contextvar there), becomes ``timeout_nano``; when it passes the call
  fails with DEADLINE_EXCEEDED and the stream is forgotten (ttrpc cannot tell the
  server; a late reply is dropped).
* Errors: a non-OK status goes through the ``from_status`` hook (arun plugs
  ``errdefs.grpc.from_code``) so a handler's error class comes back as itself.
* Connection loss: every pending call and stream fails with :class:`ClosedError`
  (``ttrpc: closed``) and ``on_close`` runs once.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from arun.ttrpc.connection import Connection, Role, StreamState
from arun.ttrpc.errors import ClosedError, LocalProtocolError, ProtocolError, StatusError
from arun.ttrpc.events import DataReceived, ResponseReceived, StreamFailed
from arun.ttrpc.lite import decode_errors
from arun.ttrpc.metadata import MD
from arun.ttrpc.service import Method
from arun.ttrpc.status import Code, FromStatus, default_from_status

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = ["Client", "ClientStream", "unix_address"]

log = logging.getLogger(__name__)

READ_BUFFER = 64 * 1024  # bytes read per recv_into: reused, so no allocation per read
STREAM_BUFFER = 64  # replies buffered per stream before reading pauses (Go HEAD: 64)
STREAM_FULL_TIMEOUT = 1.0  # seconds a full stream may stall the connection before it fails

MetadataArg = MD | Iterable[tuple[str, str]] | None

_DEADLINE_EXCEEDED = int(Code.DEADLINE_EXCEEDED)
_INTERNAL = int(Code.INTERNAL)
_RESOURCE_EXHAUSTED = int(Code.RESOURCE_EXHAUSTED)
_EOF = object()


def unix_address(address: str) -> str:
    """The socket path for ``unix:///path``, ``/path`` or ``@abstract`` (a NUL-prefixed name)."""
    if address.startswith("unix://"):
        address = address[len("unix://") :]
    if address.startswith("@"):
        return "\0" + address[1:]
    if not address:
        raise ValueError("empty ttrpc address")
    return address


class Client(asyncio.BufferedProtocol):
    """A ttrpc client connection. Make one with :meth:`connect` (or :meth:`from_socket`)."""

    def __init__(
        self,
        *,
        from_status: FromStatus = default_from_status,
        on_close: Callable[[], object] | None = None,
        deadline: Callable[[], float | None] | None = None,
        metadata: Callable[[], Iterable[tuple[str, str]]] | None = None,
    ) -> None:
        self._from_status = from_status
        self._on_close = on_close
        self._deadline = deadline
        self._metadata = metadata
        self._conn = Connection(Role.CLIENT)
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: dict[int, asyncio.Future[ResponseReceived]] = {}
        self._streams: dict[int, ClientStream] = {}
        self._closed = False
        self._closed_fut: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._full = 0
        self._rbuf = memoryview(bytearray(READ_BUFFER))

    # -- connecting ----------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the connect timeout, part of the API
        **options: Any,
    ) -> Client:
        """Connect to a unix socket (``unix:///path``, ``/path`` or ``@abstract``)."""
        client = cls(**options)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            await loop.create_unix_connection(lambda: client, unix_address(address))
        return client

    @classmethod
    async def from_socket(cls, sock: Any, **options: Any) -> Client:
        """Use an already connected socket (tests use a socketpair)."""
        client = cls(**options)
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: client, sock=sock)
        return client

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Close the connection; pending calls fail with ClosedError."""
        if self._transport is not None and not self._closed:
            self._transport.close()
        if self._closed_fut is not None:
            await asyncio.shield(self._closed_fut)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = transport = cast(asyncio.Transport, transport)
        self._loop = loop = asyncio.get_running_loop()
        self._closed_fut = loop.create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._rbuf[:nbytes]))

    def data_received(self, data: bytes) -> None:
        for ev in self._conn.receive_data(data):
            kind = type(ev)
            if kind is ResponseReceived:
                assert isinstance(ev, ResponseReceived)
                fut = self._calls.pop(ev.stream_id, None)
                if fut is not None:
                    if not fut.done():
                        fut.set_result(ev)
                else:
                    stream = self._streams.get(ev.stream_id)
                    if stream is not None:
                        stream._on_response(ev)
            elif kind is DataReceived:
                assert isinstance(ev, DataReceived)
                stream = self._streams.get(ev.stream_id)
                if stream is not None:
                    stream._on_data(ev)
            elif kind is StreamFailed:
                assert isinstance(ev, StreamFailed)
                exc = self._from_status(ev.code, ev.message)
                fut = self._calls.pop(ev.stream_id, None)
                if fut is not None:
                    if not fut.done():
                        fut.set_exception(exc)
                else:
                    stream = self._streams.get(ev.stream_id)
                    if stream is not None:
                        stream._fail(exc)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._conn.closed:
            self._conn.receive_data(b"")
        calls, self._calls = self._calls, {}
        for fut in calls.values():
            if not fut.done():
                fut.set_exception(ClosedError())
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream._fail(ClosedError())
        self._wake_writers(ClosedError())
        if self._closed_fut is not None and not self._closed_fut.done():
            self._closed_fut.set_result(None)
        if self._on_close is not None:
            try:
                self._on_close()
            except Exception:
                log.exception("ttrpc: on_close callback failed")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writers(None)

    # -- calls ---------------------------------------------------------------------------------

    def _open(
        self,
        service: str,
        method: str,
        payload: bytes,
        timeout: float | None,
        metadata: MetadataArg,
        client_streaming: bool = False,
        server_streaming: bool = False,
    ) -> tuple[int, float | None]:
        """Send the Request of a new stream; returns (stream id, timeout in seconds)."""
        if self._closed or self._transport is None or self._transport.is_closing():
            raise ClosedError()
        if timeout is None and self._deadline is not None:
            timeout = self._deadline()
        timeout_nano = 0
        if timeout is not None:
            if timeout <= 0:
                raise self._from_status(_DEADLINE_EXCEEDED, "context deadline exceeded")
            timeout_nano = max(1, int(timeout * 1e9))
        pairs: Iterable[tuple[str, str]] = ()
        if self._metadata is not None:
            pairs = list(self._metadata())
        if metadata is not None:
            extra = metadata.pairs() if isinstance(metadata, MD) else metadata
            pairs = [*pairs, *extra] if pairs else list(extra)
        conn = self._conn
        try:
            sid = conn.send_request(
                service,
                method,
                payload,
                timeout_nano=timeout_nano,
                metadata=pairs,
                client_streaming=client_streaming,
                server_streaming=server_streaming,
            )
        except ProtocolError as exc:
            raise self._from_status(exc.code, exc.message) from exc
        self._transport.write(conn.data_to_send())
        return sid, timeout

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes = b"",
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - becomes timeout_nano on the wire
        metadata: MetadataArg = None,
    ) -> bytes:
        """A unary call with raw payloads: the reply's payload, or the status as an exception."""
        sid, fut, timer = self._start_unary(service, method, payload, timeout, metadata)
        try:
            ev = await fut
        except BaseException:
            self._abandon(sid)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if ev.code:
            raise self._status_exception(ev)
        return ev.payload

    async def invoke(
        self,
        method: Method,
        request: Message,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - becomes timeout_nano on the wire
        metadata: MetadataArg = None,
    ) -> Any:
        """A unary call with messages: the decoded reply of ``method.response_type``."""
        sid, fut, timer = self._start_unary(
            method.service, method.name, request.SerializeToString(), timeout, metadata
        )
        try:
            ev = await fut
        except BaseException:
            self._abandon(sid)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if ev.code:
            raise self._status_exception(ev)
        try:
            return method.response_type.FromString(ev.payload)
        except decode_errors() as exc:
            raise self._from_status(_INTERNAL, f"ttrpc: error unmarshalling response: {exc}") from exc

    def _start_unary(
        self, service: str, method: str, payload: bytes, timeout: float | None, metadata: MetadataArg
    ) -> tuple[int, asyncio.Future[ResponseReceived], asyncio.TimerHandle | None]:
        """Send the Request and register the future its Response (or failure) will complete."""
        sid, limit = self._open(service, method, payload, timeout, metadata)
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[ResponseReceived] = loop.create_future()
        self._calls[sid] = fut
        timer = None if limit is None else loop.call_later(limit, self._expire, sid)
        return sid, fut, timer

    def _abandon(self, sid: int) -> None:
        """Given up (deadline, cancellation) or failed: forget the stream so that a late reply is
        dropped. ttrpc has no frame to tell the server."""
        self._conn.forget_stream(sid)
        self._calls.pop(sid, None)

    def _expire(self, sid: int) -> None:
        fut = self._calls.pop(sid, None)
        if fut is not None and not fut.done():
            fut.set_exception(self._from_status(_DEADLINE_EXCEEDED, "context deadline exceeded"))

    def _status_exception(self, ev: ResponseReceived) -> BaseException:
        exc = self._from_status(ev.code, ev.message)
        if isinstance(exc, StatusError):
            if ev.details and not exc.details:
                exc.details = ev.details
        elif ev.details:
            exc.__cause__ = StatusError(ev.code, ev.message, ev.details)
        return exc

    # -- streams -------------------------------------------------------------------------------

    def stream(
        self,
        method: Method,
        request: Message | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataArg = None,
    ) -> ClientStream:
        """Open a stream for a streaming method.

        For a server-streaming method ``request`` is the single input message. For client-
        and bidi-streaming methods messages go through :meth:`ClientStream.send` (a
        ``request`` given here travels in the Request as the first message).
        """
        if not (method.client_streaming or method.server_streaming):
            raise LocalProtocolError(f"{method.full_name} is unary: use invoke()")
        if request is None and not method.client_streaming:
            request = method.request_type()
        payload = b"" if request is None else request.SerializeToString()
        sid, timeout = self._open(
            method.service,
            method.name,
            payload,
            timeout,
            metadata,
            client_streaming=method.client_streaming,
            server_streaming=method.server_streaming,
        )
        stream = ClientStream(self, sid, method)
        self._streams[sid] = stream
        if timeout is not None:
            assert self._loop is not None
            stream._timer = self._loop.call_later(timeout, stream._expire)
        return stream

    def bind_method(self, method: Method) -> Callable[..., Any]:
        """The stub callable for ``method`` (see :class:`arun.ttrpc.service.ServiceStub`)."""
        if method.client_streaming or method.server_streaming:
            return functools.partial(self.stream, method)
        return functools.partial(self.invoke, method)

    # -- plumbing for streams ------------------------------------------------------------------

    def _forget(self, sid: int) -> None:
        self._streams.pop(sid, None)
        self._conn.forget_stream(sid)

    def _send_frame(self, sid: int, data: bytes | None) -> None:
        if self._closed or self._transport is None or self._transport.is_closing():
            raise ClosedError()
        if data is None:
            self._conn.end_stream(sid)
        else:
            self._conn.send_data(sid, data)
        self._transport.write(self._conn.data_to_send())

    def _stream_state(self, sid: int) -> StreamState:
        return self._conn.stream_state(sid)

    async def _drain(self) -> None:
        if self._closed:
            raise ClosedError()
        if self._write_paused:
            assert self._loop is not None
            fut = self._loop.create_future()
            self._drain_waiters.append(fut)
            await fut

    def _wake_writers(self, exc: BaseException | None) -> None:
        waiters = self._drain_waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)

    def _stream_full(self, stream: ClientStream) -> None:
        self._full += 1
        if self._full == 1 and self._transport is not None:
            self._transport.pause_reading()
        assert self._loop is not None
        stream._full_timer = self._loop.call_later(STREAM_FULL_TIMEOUT, stream._full_expired)

    def _stream_drained(self, stream: ClientStream) -> None:
        if stream._full_timer is not None:
            stream._full_timer.cancel()
            stream._full_timer = None
        self._full -= 1
        if self._full == 0 and self._transport is not None and not self._closed:
            self._transport.resume_reading()


class ClientStream:
    """One open stream: ``send``/``close_send`` for a streaming client, ``recv`` (or
    ``async for``) for the replies. Use as ``async with`` to forget it when done."""

    def __init__(self, client: Client, stream_id: int, method: Method) -> None:
        self._client = client
        self.stream_id = stream_id
        self.method = method
        self._items: collections.deque[object] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done = False  # the end (EOF or error) has been queued
        self._error: BaseException | None = None  # how the stream failed, if it did
        self._finished = False  # recv() returned the end
        self._timer: asyncio.TimerHandle | None = None
        self._full_timer: asyncio.TimerHandle | None = None
        self._counted_full = False

    # -- sending -------------------------------------------------------------------------------

    async def send(self, request: Message) -> None:
        """Send one message (client- and bidi-streaming methods)."""
        if not self.method.client_streaming:
            raise LocalProtocolError(f"{self.method.full_name} does not stream requests")
        self._check_sendable()
        self._client._send_frame(self.stream_id, request.SerializeToString())
        await self._client._drain()

    async def close_send(self) -> None:
        """Half-close: the server's next receive sees the end of the requests."""
        if not self.method.client_streaming:
            raise LocalProtocolError(f"{self.method.full_name} does not stream requests")
        self._check_sendable()
        self._client._send_frame(self.stream_id, None)

    def _check_sendable(self) -> None:
        state = self._client._stream_state(self.stream_id)
        if state is StreamState.OPEN:
            return
        if self._error is not None:
            raise self._error
        if self._client.closed:
            raise ClosedError()
        raise LocalProtocolError(f"cannot send on stream {self.stream_id}: it is {state.value}")

    # -- receiving -----------------------------------------------------------------------------

    async def recv(self) -> Any:
        """The next reply, or None once the server has ended the stream."""
        items = self._items
        while not items:
            if self._finished:
                return None
            assert self._client._loop is not None
            self._waiter = self._client._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = items.popleft()
        if self._counted_full and len(items) < STREAM_BUFFER:
            self._counted_full = False
            self._client._stream_drained(self)
        if item is _EOF:
            self._finished = True
            return None
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        assert isinstance(item, bytes)
        try:
            return self.method.response_type.FromString(item)
        except decode_errors() as exc:
            raise self._client._from_status(_INTERNAL, f"ttrpc: error unmarshalling response: {exc}") from exc

    async def close_and_recv(self) -> Any:
        """Client streaming: half-close, then the single reply."""
        await self.close_send()
        reply = await self.recv()
        if reply is None:
            raise self._client._from_status(_INTERNAL, "ttrpc: stream ended without a reply")
        return reply

    def __aiter__(self) -> ClientStream:
        return self

    async def __anext__(self) -> Any:
        reply = await self.recv()
        if reply is None:
            raise StopAsyncIteration
        return reply

    async def aclose(self) -> None:
        """Forget the stream (the server is not told; late frames are dropped)."""
        self._end()
        self._client._forget(self.stream_id)
        if not self._done:
            self._push(_EOF)
            self._done = True

    async def __aenter__(self) -> ClientStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- fed by the client ---------------------------------------------------------------------

    def _push(self, item: object) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted_full:
            self._counted_full = False
            self._client._stream_drained(self)

    def _on_data(self, ev: DataReceived) -> None:
        if ev.data is not None:
            self._push(ev.data)
            if len(self._items) >= STREAM_BUFFER and not self._counted_full:
                self._counted_full = True
                self._client._stream_full(self)
        if ev.end_stream:
            self._finish(_EOF)

    def _on_response(self, ev: ResponseReceived) -> None:
        if ev.code:
            self._finish(self._client._status_exception(ev))
            return
        if ev.payload or not self.method.server_streaming:
            self._push(ev.payload)
        self._finish(_EOF)

    def _fail(self, exc: BaseException) -> None:
        self._finish(exc)

    def _finish(self, item: object) -> None:
        if self._done:
            return
        self._done = True
        if isinstance(item, BaseException):
            self._error = item
        self._end()
        self._client._streams.pop(self.stream_id, None)
        self._push(item)

    def _expire(self) -> None:
        self._timer = None
        if self._done:
            return
        self._client._conn.forget_stream(self.stream_id)
        self._finish(self._client._from_status(_DEADLINE_EXCEEDED, "context deadline exceeded"))

    def _full_expired(self) -> None:
        self._full_timer = None
        if self._done or not self._counted_full:
            return
        self._client._conn.forget_stream(self.stream_id)
        # Drop what is buffered: the stream has failed, the connection must read on.
        self._items.clear()
        self._finish(self._client._from_status(_RESOURCE_EXHAUSTED, "ttrpc: stream buffer full"))
