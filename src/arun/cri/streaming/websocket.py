"""The asyncio edge of the WebSocket channel protocols: channels multiplexed over an aiohttp WebSocket.

:class:`ChannelMux` runs the receive loop, hands each message's data to its
channel's :class:`ChannelReader`, and writes through :class:`ChannelWriter` s
that prefix the channel number (serialised by one lock). Activity in either
direction pushes the idle deadline back, as Go's ``wsstream`` resets both read
and write deadlines on every message.

``hold_output`` delays the server's first messages a little: client-go up to
1.33 starts reading the WebSocket *before* it has registered its streams, and
drops ("Unknown stream id") whatever arrives in between. kubectl 1.32 loses an
``echo``'s output that way against a server that answers at once; the API
server never showed it because its own hop to kubelet takes longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiohttp import WSMsgType, web

from arun.cri.streaming import channels
from arun.cri.streaming import constants as c

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER = 1 << 20


class ChannelReader:
    """The bytes the client sends on one channel (an ``InputStream``)."""

    def __init__(self, mux: ChannelMux, channel: int) -> None:
        self._mux = mux
        self.channel = channel
        self._buf = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        if self._eof or not data:
            return
        self._buf += data
        self._mux._buffered += len(data)
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buf

    async def read(self, n: int = 65536) -> bytes:
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
        self._mux._consumed(len(data))
        return data

    def discard(self) -> None:
        """Drop what is buffered and stop buffering."""
        self._mux._consumed(len(self._buf))
        self._buf.clear()
        self._eof = True
        self._wake()


class ChannelWriter:
    """Output on one channel (an ``OutputStream``). Closing only stops further writes:
    the channel protocols have no server-to-client half-close."""

    def __init__(self, mux: ChannelMux, channel: int) -> None:
        self._mux = mux
        self.channel = channel
        self._closed = False

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise BrokenPipeError(f"channel {self.channel} is closed")
        if data:
            await self._mux.send(self.channel, data)

    async def close(self) -> None:
        self._closed = True


class ChannelDuplex:
    """A port-forward channel pair's data channel as a ``DuplexStream``.

    With no half-close in the protocol, closing the direction toward the client
    ends the channel in both directions: reading returns EOF afterwards.
    """

    def __init__(self, reader: ChannelReader, writer: ChannelWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, n: int = 65536) -> bytes:
        return await self._reader.read(n)

    async def write(self, data: bytes) -> None:
        await self._writer.write(data)

    async def close(self) -> None:
        await self._writer.close()
        self._reader.discard()


class ChannelMux:
    """Channels over one prepared WebSocket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        protocol: channels.ChannelProtocol,
        *,
        readable: Iterable[int] = (),
        idle_timeout: float | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        hold_output: float = 0.0,
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self._readers = {n: ChannelReader(self, n) for n in readable}
        self._lock = asyncio.Lock()
        self._buffered = 0
        self._max_buffer = max_buffer
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = asyncio.Event()
        self._idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._last_activity = self._loop.time()
        self.idled_out = False
        self._hold_until = self._loop.time() + hold_output

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Until the client has closed, the connection dropped, or it idled out."""
        await self._closed.wait()

    def reader(self, channel: int) -> ChannelReader:
        return self._readers[channel]

    def writer(self, channel: int) -> ChannelWriter:
        return ChannelWriter(self, channel)

    def _consumed(self, n: int) -> None:
        self._buffered -= n
        if self._buffered <= self._max_buffer // 2:
            self._drained.set()

    async def send(self, channel: int, data: bytes) -> None:
        """One message on ``channel``; BrokenPipeError once the WebSocket is closed."""
        message = channels.encode(self.protocol, channel, data)
        wait = self._hold_until - self._loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        async with self._lock:
            if self.closed or self.ws.closed:
                raise BrokenPipeError("websocket is closed")
            try:
                if isinstance(message, str):
                    await self.ws.send_str(message)
                else:
                    await self.ws.send_bytes(message)
            except (ConnectionError, RuntimeError) as exc:
                raise BrokenPipeError(f"websocket send failed: {exc}") from exc
        self._last_activity = self._loop.time()

    async def run(self) -> None:
        """Receive until the client closes, the connection drops, or it idles out; then EOF every reader."""
        try:
            while True:
                if not self._drained.is_set():
                    await self._drained.wait()
                timeout = None
                if self._idle_timeout:
                    timeout = self._last_activity + self._idle_timeout - self._loop.time()
                    if timeout <= 0:
                        self.idled_out = True
                        log.info("websocket stream idle for %.0fs: closing", self._idle_timeout)
                        return
                try:
                    msg = await self.ws.receive(timeout=timeout)
                except TimeoutError:
                    continue  # re-check the deadline: writes may have pushed it back
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    return
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                self._last_activity = self._loop.time()
                self._handle(msg.data)
        finally:
            self._closed.set()
            for reader in self._readers.values():
                reader.feed_eof()

    def _handle(self, payload: bytes | str) -> None:
        try:
            decoded = channels.decode(self.protocol, payload)
        except channels.ChannelProtocolError as exc:
            log.warning("websocket channel protocol error: %s", exc)
            return
        if decoded is None:
            return
        reader = self._readers.get(decoded.channel)
        if reader is None:
            return  # a channel the client may not write: ignored, as wsstream does
        if isinstance(decoded, channels.ChannelClosed):
            reader.feed_eof()
            return
        reader._feed(decoded.data)
        if self._buffered > self._max_buffer:
            self._drained.clear()

    async def close(self) -> None:
        """Close the WebSocket normally (code 1000)."""
        self._closed.set()
        for reader in self._readers.values():
            reader.feed_eof()
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
            async with self._lock:
                await self.ws.close(code=c.WS_CLOSE_NORMAL)
