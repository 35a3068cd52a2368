"""The asyncio ttrpc server: unix sockets in, one task per request.

Per connection there is one reader (an :class:`asyncio.BufferedProtocol` feeding the sans-IO
:class:`~arun.ttrpc.connection.Connection`) and one writer (the transport; every frame
goes out through ``transport.write`` from the loop, so frames never interleave).
Each request runs in its own task:

* under ``asyncio.timeout`` when the request carries ``timeout_nano`` (expiry cancels the
  handler and answers DEADLINE_EXCEEDED);
* with the request metadata in :func:`arun.ttrpc.metadata.current`;
* inside the optional ``request_context(RequestInfo)`` context manager, where the
  embedding program sets its own contextvars (arun: namespace from
  ``containerd-namespace-ttrpc``, deadline from the timeout).

A handler's exception becomes the Response status: a :class:`StatusError` keeps its
code, anything else goes through the ``to_status`` hook. Shutdown follows Go's
``Server.Shutdown``: stop accepting, close idle connections, let active requests finish
for a grace period, then cancel what is left.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from arun.ttrpc.connection import Connection, Role, StreamState
from arun.ttrpc.errors import ClosedError, OversizedMessageError, StatusError
from arun.ttrpc.events import DataReceived, RequestReceived, StreamFailed
from arun.ttrpc.handshake import PeerCredentials, peer_credentials, require_same_user
from arun.ttrpc.lite import decode_errors, full_name
from arun.ttrpc.metadata import MD
from arun.ttrpc.metadata import set_current as _set_metadata
from arun.ttrpc.service import RegisteredMethod, ServiceTable, bind_service
from arun.ttrpc.status import Code, ToStatus, default_to_status

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor
    from google.protobuf.message import Message

_NONE = object()

__all__ = [
    "PeerCredentials",
    "RequestInfo",
    "Server",
    "peer_credentials",
    "require_same_user",
]

log = logging.getLogger(__name__)

READ_BUFFER = 64 * 1024  # bytes read per recv_into: reused, so no allocation per read
STREAM_BUFFER = 64  # messages buffered per client-streaming request (Go HEAD: 64)
STREAM_FULL_TIMEOUT = 1.0  # seconds a full buffer may block the connection before the stream fails

_CLOSED = StreamState.CLOSED
_CANCELLED = int(Code.CANCELLED)
_UNKNOWN = int(Code.UNKNOWN)
_INTERNAL = int(Code.INTERNAL)
_INVALID_ARGUMENT = int(Code.INVALID_ARGUMENT)
_UNIMPLEMENTED = int(Code.UNIMPLEMENTED)
_RESOURCE_EXHAUSTED = int(Code.RESOURCE_EXHAUSTED)
_LOGGED_CODES = frozenset({_UNKNOWN, _INTERNAL})


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a ``request_context`` hook learns about a request."""

    stream_id: int
    service: str
    method: str
    metadata: MD
    timeout: float | None  # seconds, from timeout_nano; None when the client set none


RequestContext = Callable[[RequestInfo], AbstractContextManager[object]]


class Server:
    """A ttrpc server. Register services, then :meth:`serve_unix` (or :meth:`serve_socket`)."""

    def __init__(
        self,
        *,
        to_status: ToStatus = default_to_status,
        request_context: RequestContext | None = None,
        peer_check: Callable[[PeerCredentials], bool] | None = None,
    ) -> None:
        self._to_status = to_status
        self._request_context = request_context
        self._peer_check = peer_check
        self._services: dict[str, dict[str, RegisteredMethod]] = {}
        self._listeners: list[asyncio.AbstractServer] = []
        self._paths: list[str] = []
        self._conns: set[_ServerConnection] = set()
        self._closing = False
        self._all_closed: asyncio.Event | None = None

    # -- registration --------------------------------------------------------------------------

    def register(self, service: ServiceDescriptor | ServiceTable | str, handler: object) -> None:
        """Serve ``service`` (a descriptor, a :class:`ServiceTable` or a full name) with the
        methods of ``handler``."""
        name, methods = bind_service(service, handler)
        if name in self._services:
            raise ValueError(f"service {name!r} is already registered")
        self._services[name] = methods

    @property
    def services(self) -> list[str]:
        return sorted(self._services)

    # -- listening -----------------------------------------------------------------------------

    async def serve_unix(self, path: str, *, mode: int | None = None) -> None:
        """Listen on a unix socket path (an existing socket file there is replaced)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(lambda: _ServerConnection(self), path)
        if mode is not None:
            os.chmod(path, mode)
        self._listeners.append(listener)
        self._paths.append(path)

    async def serve_socket(self, sock: socket.socket) -> None:
        """Listen on an already bound and listening unix socket (e.g. inherited as fd 3)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(lambda: _ServerConnection(self), sock=sock)
        self._listeners.append(listener)

    async def accept_socket(self, sock: socket.socket) -> None:
        """Serve one already connected socket (tests use a socketpair)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: _ServerConnection(self), sock)

    def _check_open(self) -> None:
        if self._closing:
            raise ClosedError("ttrpc: server closed")

    @property
    def active_requests(self) -> int:
        return sum(len(c.tasks) for c in self._conns)

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- shutdown ------------------------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, close idle connections, give active requests ``grace`` seconds to
        finish, then cancel the rest and close everything."""
        self._closing = True
        event = self._all_closed = asyncio.Event()
        if not self._conns:
            event.set()
        for listener in self._listeners:
            listener.close()
        for conn in list(self._conns):
            conn.close_if_idle()
        if grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), grace)
        await self._abort_all()
        # Aborted transports report connection_lost on a later loop iteration.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), 5)
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._paths.clear()

    async def close(self) -> None:
        """Close everything now: requests in flight are cancelled (Go ``Server.Close``)."""
        await self.shutdown(0)

    async def _abort_all(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        for conn in list(self._conns):
            tasks.extend(conn.abort())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _connection_gone(self, conn: _ServerConnection) -> None:
        self._conns.discard(conn)
        if not self._conns and self._all_closed is not None:
            self._all_closed.set()


class _ServerConnection(asyncio.BufferedProtocol):
    """Reader and writer of one accepted connection."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._conn = Connection(Role.SERVER)
        self._transport: asyncio.Transport | None = None
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._streams: dict[int, _RequestStream] = {}
        self._write_paused = False
        self._drain_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._full = 0  # request streams over their buffer limit: reading is paused while > 0
        self._lost = False
        self._rbuf = memoryview(bytearray(READ_BUFFER))

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = transport = cast(asyncio.Transport, transport)
        check = self._server._peer_check
        if check is not None:
            try:
                creds = peer_credentials(transport.get_extra_info("socket"))
                ok = check(creds)
            except OSError as exc:
                log.warning("ttrpc: cannot read peer credentials: %s", exc)
                ok = False
            if not ok:
                log.warning("ttrpc: connection refused by the peer check")
                self._lost = True
                transport.abort()  # closed without a word, as Go's handshaker does
                return
        self._server._conns.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._rbuf[:nbytes]))

    def data_received(self, data: bytes) -> None:
        for ev in self._conn.receive_data(data):
            kind = type(ev)
            if kind is RequestReceived:
                assert isinstance(ev, RequestReceived)
                self._on_request(ev)
            elif kind is DataReceived:
                assert isinstance(ev, DataReceived)
                self._on_data(ev)
            elif kind is StreamFailed:
                assert isinstance(ev, StreamFailed)
                log.debug("ttrpc: stream %d rejected: %s", ev.stream_id, ev.message)
                self._drop_stream(ev.stream_id)
        self._flush()

    def eof_received(self) -> bool:
        return False  # the client is gone: close (Go ends the connection on EOF)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if not self._conn.closed:
            self._conn.receive_data(b"")
        for task in self.tasks.values():
            task.cancel()
        for stream in self._streams.values():
            stream.fail(ClosedError())
        self._streams.clear()
        self._wake_writers(ClosedError())
        self._server._connection_gone(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writers(None)

    # -- control from the Server ---------------------------------------------------------------

    def close_if_idle(self) -> None:
        if not self.tasks and self._transport is not None:
            self._transport.close()

    def abort(self) -> list[asyncio.Task[None]]:
        """Cancel every request and drop the connection; returns the tasks to wait for."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if self._transport is not None:
            self._transport.abort()
        return tasks

    # -- events --------------------------------------------------------------------------------

    def _on_request(self, ev: RequestReceived) -> None:
        methods = self._server._services.get(ev.service)
        if methods is None:
            self._conn.send_response(ev.stream_id, code=_UNIMPLEMENTED, message=f"service {ev.service}")
            return
        registered = methods.get(ev.method)
        if registered is None:
            self._conn.send_response(ev.stream_id, code=_UNIMPLEMENTED, message=f"method {ev.method}")
            return
        stream: _RequestStream | None = None
        if registered.method.client_streaming:
            stream = _RequestStream(self, ev.stream_id, registered.method.request_type)
            self._streams[ev.stream_id] = stream
            if ev.payload:
                stream.put(ev.payload)
            if ev.remote_closed:
                stream.end()
        loop = asyncio.get_running_loop()
        self.tasks[ev.stream_id] = loop.create_task(self._run(ev, registered, stream))

    def _on_data(self, ev: DataReceived) -> None:
        stream = self._streams.get(ev.stream_id)
        if stream is None:
            if ev.data is None:
                return  # a pure close for a method that reads no stream: nothing to do
            if self._conn.stream_state(ev.stream_id) is not _CLOSED:
                self._conn.send_response(
                    ev.stream_id,
                    code=_INVALID_ARGUMENT,
                    message="data handling error: method does not take a request stream",
                )
            self._drop_stream(ev.stream_id)
            return
        if ev.data is not None:
            stream.put(ev.data)
        if ev.end_stream:
            stream.end()

    def _drop_stream(self, stream_id: int) -> None:
        task = self.tasks.pop(stream_id, None)
        if task is not None:
            task.cancel()
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.fail(ClosedError("ttrpc: stream closed"))

    # -- back-pressure on request streams ------------------------------------------------------

    def stream_full(self, stream: _RequestStream) -> None:
        self._full += 1
        if self._full == 1 and self._transport is not None:
            self._transport.pause_reading()
        loop = asyncio.get_running_loop()
        stream.full_timer = loop.call_later(STREAM_FULL_TIMEOUT, self._stream_full_expired, stream)

    def stream_drained(self, stream: _RequestStream) -> None:
        if stream.full_timer is not None:
            stream.full_timer.cancel()
            stream.full_timer = None
        self._full -= 1
        if self._full == 0 and self._transport is not None and not self._lost:
            self._transport.resume_reading()

    def _stream_full_expired(self, stream: _RequestStream) -> None:
        stream.full_timer = None
        if not stream.counted_full:
            return
        sid = stream.stream_id
        if self._conn.stream_state(sid) is not _CLOSED and not self._lost:
            self._conn.send_response(
                sid, code=_INVALID_ARGUMENT, message="data handling error: ttrpc: stream buffer full"
            )
            self._flush()
        self._drop_stream(sid)

    # -- output --------------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        transport = self._transport
        if data and not self._lost and transport is not None and not transport.is_closing():
            transport.write(data)

    def _wake_writers(self, exc: BaseException | None) -> None:
        waiters = self._drain_waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)

    async def _drain(self) -> None:
        if self._lost:
            raise ClosedError()
        if self._write_paused:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut

    # -- the request task ----------------------------------------------------------------------

    async def _run(
        self, ev: RequestReceived, registered: RegisteredMethod, stream: _RequestStream | None
    ) -> None:
        sid = ev.stream_id
        md = MD.from_pairs(ev.metadata) if ev.metadata else MD()
        _set_metadata(md)
        timeout = ev.timeout_nano / 1e9 if ev.timeout_nano else None
        hook = self._server._request_context
        method = registered.method
        try:
            if hook is None and timeout is None and stream is None and not method.server_streaming:
                # The plain unary call, without the extra coroutine frames of the general path.
                resp = await registered.handler(_decode(method.request_type, ev.payload))
                self._respond(sid, _encode(method.response_type, resp))
            elif hook is None:
                await self._invoke(ev, registered, stream, timeout)
            else:
                with hook(RequestInfo(sid, ev.service, ev.method, md, timeout)):
                    await self._invoke(ev, registered, stream, timeout)
        except Exception as exc:
            self._respond_error(sid, ev, exc)
        finally:
            if not self._lost and self._conn.stream_state(sid) is not _CLOSED:
                # Only a handler that raised CancelledError by itself gets here (every other way
                # out answers, or the stream or connection is gone): end the stream all the same.
                self._conn.send_response(sid, code=_CANCELLED, message="ttrpc: request cancelled")
                self._flush()
            if self.tasks.get(sid) is asyncio.current_task():
                del self.tasks[sid]
            if stream is not None:
                self._streams.pop(sid, None)
            if self._server._closing and not self.tasks:
                self.close_if_idle()

    async def _invoke(
        self,
        ev: RequestReceived,
        registered: RegisteredMethod,
        stream: _RequestStream | None,
        limit: float | None,
    ) -> None:
        if limit is None:
            await self._call(ev, registered, stream)
            return
        try:
            async with asyncio.timeout(limit) as cm:
                await self._call(ev, registered, stream)
        except TimeoutError as exc:
            if cm.expired():
                raise StatusError(Code.DEADLINE_EXCEEDED, "context deadline exceeded") from exc
            raise

    async def _call(
        self, ev: RequestReceived, registered: RegisteredMethod, stream: _RequestStream | None
    ) -> None:
        method = registered.method
        sid = ev.stream_id
        arg: Any = stream if stream is not None else _decode(method.request_type, ev.payload)
        if not method.server_streaming:
            resp = await registered.handler(arg)
            self._respond(sid, _encode(method.response_type, resp))
            return
        replies: AsyncIterator[Message] = registered.handler(arg)
        try:
            async for resp in replies:
                await self._send(sid, _encode(method.response_type, resp))
        finally:
            aclose = getattr(replies, "aclose", None)
            if aclose is not None:
                await aclose()
        if self._conn.stream_state(sid) is not _CLOSED and not self._lost:
            self._conn.end_stream(sid)
            self._flush()

    def _respond(self, sid: int, payload: bytes) -> None:
        if self._lost or self._conn.stream_state(sid) is _CLOSED:
            return
        try:
            self._conn.send_response(sid, payload)
        except OversizedMessageError as exc:
            self._conn.send_response(sid, code=_RESOURCE_EXHAUSTED, message=exc.message)
        self._flush()

    async def _send(self, sid: int, payload: bytes) -> None:
        if self._lost:
            raise ClosedError()
        if self._conn.stream_state(sid) is _CLOSED:
            raise ClosedError("ttrpc: stream closed")
        self._conn.send_data(sid, payload)
        self._flush()
        if self._write_paused:
            await self._drain()

    def _respond_error(self, sid: int, ev: RequestReceived, exc: Exception) -> None:
        if isinstance(exc, StatusError):
            code, message, details = exc.code, exc.message, exc.details
        else:
            try:
                code, message = self._server._to_status(exc)
            except Exception:
                log.exception("ttrpc: to_status hook failed")
                code, message = _UNKNOWN, str(exc)
            details = ()
            if not code:
                code = _UNKNOWN  # an exception is never OK
        if code in _LOGGED_CODES:
            log.error("ttrpc: /%s/%s failed: %s", ev.service, ev.method, message, exc_info=exc)
        else:
            log.debug("ttrpc: /%s/%s: code %d: %s", ev.service, ev.method, code, message)
        if self._lost or self._conn.stream_state(sid) is _CLOSED:
            return
        self._conn.send_response(sid, code=code, message=message, details=details)
        self._flush()


def _decode(cls: type[Message], payload: bytes) -> Message:
    try:
        return cls.FromString(payload)
    except decode_errors() as exc:
        raise StatusError(_INVALID_ARGUMENT, f"ttrpc: error unmarshalling payload: {exc}") from exc


def _encode(cls: type[Message], resp: object) -> bytes:
    if resp is None:
        raise StatusError(_UNKNOWN, "ttrpc: marshal called with nil")
    if type(resp) is not cls and getattr(resp, "DESCRIPTOR", None) is not getattr(cls, "DESCRIPTOR", _NONE):
        raise StatusError(_INTERNAL, f"ttrpc: handler returned {type(resp).__name__}, want {full_name(cls)}")
    data: bytes = cast(Any, resp).SerializeToString()
    return data


class _RequestStream:
    """The async iterator of request messages handed to a client-streaming handler."""

    __slots__ = (
        "_ended",
        "_error",
        "_items",
        "_owner",
        "_type",
        "_waiter",
        "counted_full",
        "full_timer",
        "stream_id",
    )

    def __init__(self, owner: _ServerConnection, stream_id: int, type_: type[Message]) -> None:
        self._owner = owner
        self.stream_id = stream_id
        self._type = type_
        self._items: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._error: BaseException | None = None
        self.full_timer: asyncio.TimerHandle | None = None
        self.counted_full = False  # over the limit and counted by the owner (reading paused)

    def put(self, data: bytes) -> None:
        self._items.append(data)
        if len(self._items) >= STREAM_BUFFER and not self.counted_full:
            self.counted_full = True
            self._owner.stream_full(self)
        self._wake()

    def end(self) -> None:
        self._ended = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._items.clear()
        if self.counted_full:
            self.counted_full = False
            self._owner.stream_drained(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> _RequestStream:
        return self

    async def __anext__(self) -> Message:
        items = self._items
        while not items:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = items.popleft()
        if self.counted_full and len(items) < STREAM_BUFFER:
            self.counted_full = False
            self._owner.stream_drained(self)
        return _decode(self._type, data)
