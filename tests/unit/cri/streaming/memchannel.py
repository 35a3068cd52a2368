"""Two SPDY sessions wired in memory, with the reading side's pause honoured."""

from __future__ import annotations

import asyncio
import contextlib

from arun.cri.streaming import spdy
from arun.cri.streaming.session import SpdySession, SpdyStream


class MemChannel:
    """One direction's sender: bytes go to the peer session through a queue pumped while not paused."""

    def __init__(self) -> None:
        self.peer: SpdySession | None = None
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.reading = asyncio.Event()  # the *peer's* reading state, toggled by the peer's channel
        self.reading.set()
        self.closed = False
        self.pauses = 0
        self.sent: list[bytes] = []
        self.partner: MemChannel | None = None
        self._pump: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._pump = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        assert self.peer is not None
        while True:
            data = await self.queue.get()
            if data is None:
                self.peer.feed_eof()
                return
            await self.reading.wait()
            self.peer.feed_data(data)

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        self.sent.append(data)
        await self.queue.put(data)

    # the flow control calls come from *this* side's session about what it receives,
    # so they act on the partner channel's pump (which delivers to us)
    def pause_reading(self) -> None:
        self.pauses += 1
        assert self.partner is not None
        self.partner.reading.clear()

    def resume_reading(self) -> None:
        assert self.partner is not None
        self.partner.reading.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
            if self.partner is not None and not self.partner.closed:
                self.partner.closed = True
                self.partner.queue.put_nowait(None)

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


class Pair:
    def __init__(self, *, idle_timeout: float | None = None, max_buffer: int = 1 << 20) -> None:
        self.accepted: asyncio.Queue[SpdyStream] = asyncio.Queue()
        self.to_server = MemChannel()
        self.to_client = MemChannel()
        self.to_server.partner = self.to_client
        self.to_client.partner = self.to_server

        def on_stream(stream: SpdyStream) -> None:
            stream.accept()
            self.accepted.put_nowait(stream)

        self.client = SpdySession(spdy.Role.CLIENT, self.to_server)
        self.server = SpdySession(
            spdy.Role.SERVER,
            self.to_client,
            on_stream=on_stream,
            idle_timeout=idle_timeout,
            max_buffer=max_buffer,
        )
        self.to_server.peer = self.server
        self.to_client.peer = self.client
        self.to_server.start()
        self.to_client.start()

    async def close(self) -> None:
        self.client.abort()
        self.server.abort()
        await self.to_server.stop()
        await self.to_client.stop()
