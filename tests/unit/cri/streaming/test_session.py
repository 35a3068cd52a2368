"""The asyncio SPDY session: streams as async byte streams, back-pressure, resets, idle timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from arun.cri.streaming import spdy
from arun.cri.streaming.session import SpdySession, StreamResetError

from .memchannel import MemChannel, Pair


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = Pair()
    yield p
    await p.close()


async def test_streams_carry_data_both_ways_with_half_close(pair: Pair) -> None:
    stream = await pair.client.open_stream({"streamType": "stdout"})
    peer = await pair.accepted.get()
    assert peer.header("streamType") == "stdout"
    assert stream.id == 1 and peer.id == 1
    await peer.write(b"hello ")
    await peer.write(b"world")
    await peer.close()
    assert await stream.read_all() == b"hello world"
    assert stream.at_eof
    await stream.write(b"back")
    await stream.close()
    assert await peer.read(2) == b"ba"
    assert await peer.read() == b"ck"
    assert await peer.read() == b""
    with pytest.raises(BrokenPipeError):
        await peer.write(b"late")
    await peer.close()  # idempotent


async def test_remote_reset_keeps_received_data(pair: Pair) -> None:
    stream = await pair.client.open_stream({})
    peer = await pair.accepted.get()
    await peer.write(b"last words")
    peer.reset(spdy.RstStatus.CANCEL)
    await asyncio.sleep(0.05)
    assert stream.reset_status == spdy.RstStatus.CANCEL
    assert await stream.read_all() == b"last words"
    with pytest.raises(BrokenPipeError):
        await stream.write(b"x")
    with pytest.raises(BrokenPipeError):
        await peer.write(b"x")


async def test_refused_stream(pair: Pair) -> None:
    pair.server._on_stream = lambda s: s.reset(spdy.RstStatus.REFUSED_STREAM)
    with pytest.raises(StreamResetError):
        await pair.client.open_stream({})


async def test_reply_timeout() -> None:
    p = Pair()
    p.server._on_stream = lambda s: None  # never replies
    try:
        with pytest.raises(TimeoutError):
            await p.client.open_stream({}, reply_within=0.1)
    finally:
        await p.close()


async def test_ping(pair: Pair) -> None:
    rtt = await pair.client.ping(within=5)
    assert rtt >= 0
    assert await pair.server.ping(within=5) >= 0


async def test_back_pressure_pauses_and_resumes_reading() -> None:
    p = Pair(max_buffer=64 << 10)
    try:
        stream = await p.client.open_stream({})
        peer = await p.accepted.get()
        payload = bytes(range(256)) * 1024  # 256 KiB, four times the buffer
        writer = asyncio.ensure_future(stream.write(payload))
        await asyncio.sleep(0.05)
        assert p.to_client.pauses >= 1  # the server stopped reading
        assert not p.to_server.reading.is_set()
        got = b""
        while len(got) < len(payload):
            got += await peer.read()
        await writer
        assert got == payload
        assert p.to_server.reading.is_set()
    finally:
        await p.close()


async def test_transport_eof_ends_every_stream(pair: Pair) -> None:
    stream = await pair.client.open_stream({})
    peer = await pair.accepted.get()
    pair.to_server.close()
    await pair.server.wait_closed()
    await pair.client.wait_closed()
    assert await peer.read() == b""
    assert await stream.read() == b""
    with pytest.raises(BrokenPipeError):
        await peer.write(b"x")
    with pytest.raises(BrokenPipeError):
        await pair.client.open_stream({})


async def test_idle_timeout_resets_streams_and_closes() -> None:
    p = Pair(idle_timeout=0.2)
    try:
        stream = await p.client.open_stream({})
        peer = await p.accepted.get()
        for _ in range(4):  # traffic keeps it alive
            await asyncio.sleep(0.1)
            await stream.write(b".")
        assert not p.server.closed
        await asyncio.wait_for(p.server.wait_closed(), 2)
        assert p.server.idled_out
        assert peer.reset_status == spdy.RstStatus.CANCEL
        await asyncio.wait_for(p.client.wait_closed(), 2)
    finally:
        await p.close()


async def test_protocol_error_from_peer_sends_goaway_and_closes() -> None:
    p = Pair()
    try:
        p.server.feed_data(bytes.fromhex("80020006 00000004 00000001"))  # SPDY version 2
        await asyncio.wait_for(p.server.wait_closed(), 2)
        frames = list(spdy.iter_frames(b"".join(p.to_client.sent)))
        assert frames[-1] == spdy.GoAwayFrame(0, spdy.GoAwayStatus.PROTOCOL_ERROR)
    finally:
        await p.close()


async def test_close_waits_for_the_peer_then_closes() -> None:
    p = Pair()
    try:
        closing = asyncio.ensure_future(p.server.close(grace=5))
        await asyncio.wait_for(p.client.wait_goaway_or_closed(), 2)
        assert p.client.goaway_received
        p.client.abort()
        await asyncio.wait_for(closing, 2)
        assert p.server.closed
    finally:
        await p.close()


async def test_close_gives_up_after_the_grace() -> None:
    channel = MemChannel()
    channel.partner = MemChannel()
    session = SpdySession(spdy.Role.SERVER, channel)
    await asyncio.wait_for(session.close(grace=0.1), 2)
    assert channel.closed
