"""The asyncio edge of SPDY: a :class:`spdy.Connection` driven over a byte channel.

A :class:`SpdySession` is fed bytes by whatever carries the connection (an
upgraded HTTP connection, the binary messages of a WebSocket tunnel, or a
socket in the test client) and writes through a :class:`ByteChannel`. All
writes go through one lock, so frames leave in the order they were queued.

Streams are :class:`SpdyStream` objects with ``read``/``write``/``close`` — they
satisfy the runtime's ``InputStream``, ``OutputStream`` and ``DuplexStream``.

Receiving applies back-pressure the way spdystream's unbuffered channels do:
when more than ``max_buffer`` bytes wait unread across the streams, the session
stops reading the transport until readers catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Protocol, TypeVar

from arun.cri.streaming import spdy

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER = 1 << 20

T = TypeVar("T")


class ByteChannel(Protocol):
    """Where a session's bytes go, and the reading side's flow control."""

    async def send(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


def _fail(fut: asyncio.Future[T], exc: BaseException) -> None:
    """Fail ``fut`` without a "never retrieved" complaint if nobody is waiting for it."""
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()


class StreamResetError(ConnectionResetError):
    """The stream was reset (RST_STREAM) or its connection went away."""


class SpdyStream:
    """One SPDY stream, as an async byte stream."""

    def __init__(self, session: SpdySession, stream_id: int, headers: spdy.Headers, *, local: bool) -> None:
        self._session = session
        self.id = stream_id
        self.headers = headers
        self.local = local
        self._buf = bytearray()
        self._eof = False
        self._discard = False
        self._reset_status: int | None = None
        self._waiter: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        self._replied: asyncio.Future[spdy.Headers] = loop.create_future()
        if not local:
            self._replied.set_result(())

    def __repr__(self) -> str:
        return f"<SpdyStream {self.id} {dict(self.headers)!r}>"

    def header(self, name: str) -> str | None:
        return spdy.header_value(self.headers, name)

    @property
    def at_eof(self) -> bool:
        """True once the peer has finished sending and every byte has been read."""
        return self._eof and not self._buf

    @property
    def reset_status(self) -> int | None:
        """The RST_STREAM status if the stream was reset."""
        return self._reset_status

    @property
    def closed_for_writing(self) -> bool:
        return self._session.closed or self._session.conn.local_closed(self.id)

    # ----- fed by the session
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _feed(self, data: bytes) -> None:
        if self._discard or self._eof:
            return
        self._buf += data
        self._session._buffered += len(data)
        self._wake()

    def _feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _on_reset(self, status: int) -> None:
        # Data that arrived before the reset stays readable, as with spdystream, where
        # frames of a stream are delivered in order and the reset only ends the stream.
        self._reset_status = status
        self._eof = True
        if self._discard:
            self._drop_buffer()
        _fail(self._replied, StreamResetError(f"stream {self.id} reset with status {status}"))
        self._wake()

    def _on_replied(self, headers: spdy.Headers) -> None:
        if not self._replied.done():
            self._replied.set_result(headers)

    def _drop_buffer(self) -> None:
        if self._buf:
            self._session._consumed(len(self._buf))
            self._buf.clear()

    # ----- API
    async def wait_replied(self, within: float | None = None) -> spdy.Headers:
        """For a stream this side opened: the peer's SYN_REPLY headers (StreamResetError if refused)."""
        async with asyncio.timeout(within):
            return await asyncio.shield(self._replied)

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes (all buffered bytes for ``n < 0``); ``b""`` at end of stream."""
        if n == 0:
            return b""
        while not self._buf and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if not self._buf:
            return b""
        if n < 0 or n >= len(self._buf):
            data = bytes(self._buf)
            self._buf.clear()
        else:
            data = bytes(self._buf[:n])
            del self._buf[:n]
        self._session._consumed(len(data))
        return data

    async def read_all(self) -> bytes:
        """Everything until the end of the stream."""
        chunks = []
        while chunk := await self.read(-1):
            chunks.append(chunk)
        return b"".join(chunks)

    def discard(self) -> None:
        """Drop what is buffered and anything that arrives later (nobody will read it)."""
        self._discard = True
        self._drop_buffer()

    async def write(self, data: bytes) -> None:
        """Send ``data``; BrokenPipeError once the stream is closed for writing, reset, or the peer gone.

        Returns when the bytes are with the transport (which applies its own back-pressure).
        """
        if not data:
            return
        self._check_writable()
        self._session.conn.send_data(self.id, data)
        await self._session.flush()

    def _check_writable(self) -> None:
        if self._reset_status is not None:
            raise BrokenPipeError(f"stream {self.id} was reset (status {self._reset_status})")
        if self.closed_for_writing:
            raise BrokenPipeError(f"stream {self.id} is closed for writing")

    async def close(self) -> None:
        """Half-close: FIN to the peer. A no-op if already closed, reset, or the connection is gone."""
        if self._reset_status is not None or self.closed_for_writing:
            return
        self._session.conn.end_stream(self.id)
        with contextlib.suppress(ConnectionError):
            await self._session.flush()

    def reset(self, status: int = spdy.RstStatus.CANCEL) -> None:
        """Abort the stream in both directions (RST_STREAM)."""
        if self._reset_status is None and not self._session.closed:
            self._session.conn.reset_stream(self.id, status)
            self._session._schedule_flush()
        self._session._forget(self.id)
        self._drop_buffer()
        self._discard = True
        self._on_reset(status)

    def accept(self, headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        """Reply to a stream the peer opened (SYN_REPLY), without waiting for it to be sent."""
        if self._session.closed or not self._session.conn.is_open(self.id):
            return
        self._session.conn.reply(self.id, headers)
        self._session._schedule_flush()


class SpdySession:
    """Streams and I/O for one SPDY connection."""

    def __init__(
        self,
        role: spdy.Role,
        channel: ByteChannel,
        *,
        on_stream: Callable[[SpdyStream], None] | None = None,
        idle_timeout: float | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        self.conn = spdy.Connection(role)
        self._channel = channel
        self._on_stream = on_stream
        self._streams: dict[int, SpdyStream] = {}
        self._wlock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._goaway = asyncio.Event()
        self._buffered = 0
        self._max_buffer = max_buffer
        self._paused = False
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._loop = asyncio.get_running_loop()
        self._idle_timeout = idle_timeout
        self._last_activity = self._loop.time()
        self._idle_handle: asyncio.TimerHandle | None = None
        self.idled_out = False
        self._tasks: set[asyncio.Future[None]] = set()
        if idle_timeout:
            self._idle_handle = self._loop.call_later(idle_timeout, self._check_idle)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def goaway_received(self) -> bool:
        return self._goaway.is_set()

    def streams(self) -> list[SpdyStream]:
        return list(self._streams.values())

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def wait_goaway_or_closed(self) -> None:
        """Until the peer sends GOAWAY or the connection ends."""
        goaway = asyncio.ensure_future(self._goaway.wait())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait((goaway, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            goaway.cancel()
            closed.cancel()

    # ----- idle timeout
    def _touch(self) -> None:
        self._last_activity = self._loop.time()

    def _check_idle(self) -> None:
        self._idle_handle = None
        if self.closed or not self._idle_timeout:
            return
        remaining = self._last_activity + self._idle_timeout - self._loop.time()
        if remaining > 0:
            self._idle_handle = self._loop.call_later(remaining, self._check_idle)
            return
        log.info("spdy connection idle for %.0fs: closing", self._idle_timeout)
        self.idled_out = True
        for stream in list(self._streams.values()):
            stream.reset(spdy.RstStatus.CANCEL)
        self.conn.go_away()
        self._spawn(self._flush_then_abort())

    # ----- output
    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Send everything queued; raises BrokenPipeError if the connection is gone."""
        async with self._wlock:
            data = self.conn.data_to_send()
            if not data:
                return
            if self.closed:
                raise BrokenPipeError("spdy connection is closed")
            try:
                await self._channel.send(data)
            except (ConnectionError, OSError, RuntimeError) as exc:
                self._mark_closed()
                raise BrokenPipeError(f"spdy connection lost: {exc}") from exc
            self._touch()

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.ensure_future(self._background_flush())

    async def _background_flush(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            await self.flush()

    async def _flush_then_abort(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            await self.flush()
        self.abort()

    # ----- input
    def feed_data(self, data: bytes) -> None:
        """Bytes from the transport."""
        if self.closed or not data:
            return
        self._touch()
        try:
            events = self.conn.receive_data(data)
        except spdy.RemoteProtocolError as exc:
            log.warning("spdy protocol error from peer: %s", exc)
            self._spawn(self._flush_then_abort())
            return
        for event in events:
            self._dispatch(event)
        if self._buffered > self._max_buffer and not self._paused:
            self._paused = True
            self._channel.pause_reading()
        self._schedule_flush()

    def feed_eof(self) -> None:
        """The transport closed."""
        if self.closed:
            return
        self.conn.receive_data(b"")
        self._mark_closed()

    def _consumed(self, n: int) -> None:
        self._buffered -= n
        if self._paused and self._buffered <= self._max_buffer // 2:
            self._paused = False
            if not self.closed:
                self._channel.resume_reading()

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def _dispatch(self, event: spdy.Event) -> None:
        if isinstance(event, spdy.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._feed(event.data)
        elif isinstance(event, spdy.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._feed_eof()
                if not self.conn.is_open(event.stream_id):
                    self._forget(event.stream_id)
        elif isinstance(event, spdy.StreamOpened):
            stream = SpdyStream(self, event.stream_id, event.headers, local=False)
            self._streams[event.stream_id] = stream
            if event.fin:
                stream._feed_eof()
            if self._on_stream is None:
                stream.reset(spdy.RstStatus.REFUSED_STREAM)
                return
            try:
                self._on_stream(stream)
            except Exception:
                log.exception("stream handler failed for stream %d", event.stream_id)
                stream.reset(spdy.RstStatus.INTERNAL_ERROR)
        elif isinstance(event, spdy.StreamReplied):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._on_replied(event.headers)
                if event.fin:
                    stream._feed_eof()
        elif isinstance(event, spdy.StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream._on_reset(event.status)
        elif isinstance(event, spdy.PingAcked):
            fut = self._pings.pop(event.ping_id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif isinstance(event, spdy.GoAwayReceived):
            self._goaway.set()
        elif isinstance(event, spdy.ConnectionClosed):
            self._mark_closed()
        # PingReceived (echo already queued), SETTINGS and WINDOW_UPDATE need nothing here.

    # ----- streams this side opens
    async def open_stream(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]], *, reply_within: float | None = 30.0
    ) -> SpdyStream:
        """Open a stream and wait for the peer's reply, as spdystream's ``CreateStream`` + ``WaitTimeout``."""
        if self.closed:
            raise BrokenPipeError("spdy connection is closed")
        stream_id = self.conn.open_stream(headers)
        stream = SpdyStream(self, stream_id, spdy._normalize_headers(headers), local=True)
        self._streams[stream_id] = stream
        await self.flush()
        await stream.wait_replied(reply_within)
        return stream

    async def ping(self, within: float | None = 30.0) -> float:
        """Round-trip time of a PING, in seconds."""
        ping_id = self.conn.ping()
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pings[ping_id] = fut
        start = self._loop.time()
        await self.flush()
        async with asyncio.timeout(within):
            await fut
        return self._loop.time() - start

    # ----- shutdown
    def _mark_closed(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        for stream in list(self._streams.values()):
            stream._feed_eof()
            _fail(stream._replied, StreamResetError(f"connection closed before stream {stream.id} replied"))
        for fut in self._pings.values():
            _fail(fut, BrokenPipeError("spdy connection closed"))
        self._pings.clear()

    def abort(self) -> None:
        """Close the transport now."""
        self._mark_closed()
        self._channel.close()

    async def close(self, *, grace: float = 5.0) -> None:
        """GOAWAY, then wait up to ``grace`` seconds for the peer to hang up before closing the transport."""
        if not self.closed:
            self.conn.go_away()
            with contextlib.suppress(BrokenPipeError):
                await self.flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._closed.wait()
        self.abort()
