"""A stream nobody reads must not stall the other streams of its connection for long
(Go ttrpc HEAD: the full stream fails after 1 s, the connection reads on)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from arun.testing.ttrpc import ECHO_SERVICE, EchoRequest, EchoResponse, echo_descriptor
from arun.ttrpc import Client, Code, Server, ServiceStub, StatusError

pytestmark = pytest.mark.asyncio


async def test_unread_reply_stream_fails_and_the_connection_reads_on(
    stub: ServiceStub, client: Client
) -> None:
    stream = stub.ServerStream(EchoRequest(count=2000))  # opened, never read
    await asyncio.sleep(0.1)
    assert client._full == 1  # reading is paused: the stream's buffer is full
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reply = await asyncio.wait_for(stub.Unary(EchoRequest(text="through")), 5)
    assert reply.text == "through"
    assert 0.5 < loop.time() - t0 < 4  # it had to wait for the full stream to be given up
    with pytest.raises(StatusError) as info:
        async for _ in stream:
            pass
    assert (info.value.code, info.value.message) == (Code.RESOURCE_EXHAUSTED, "ttrpc: stream buffer full")
    assert client._full == 0


async def test_handler_not_reading_its_requests_fails_the_stream(sock_path: str) -> None:
    release = asyncio.Event()

    class Lazy:
        async def ClientStream(self, reqs: AsyncIterator[Any]) -> Any:
            await release.wait()
            return EchoResponse(text=str(len([r async for r in reqs])))

        async def Unary(self, req: Any) -> Any:
            return EchoResponse(text=req.text)

    srv = Server()
    srv.register(ECHO_SERVICE, Lazy())
    await srv.serve_unix(sock_path)
    try:
        async with await Client.connect(sock_path) as c:
            stub = ServiceStub(c, echo_descriptor)
            stream = stub.ClientStream()
            for i in range(200):
                await stream.send(EchoRequest(text=str(i)))
            with pytest.raises(StatusError) as info:
                await asyncio.wait_for(stream.recv(), 5)
            assert (info.value.code, info.value.message) == (
                Code.INVALID_ARGUMENT,
                "data handling error: ttrpc: stream buffer full",
            )
            assert (await asyncio.wait_for(stub.Unary(EchoRequest(text="alive")), 5)).text == "alive"
    finally:
        release.set()
        await srv.close()


async def test_slow_but_steady_reader_gets_everything(stub: ServiceStub) -> None:
    got = 0
    async for reply in stub.ServerStream(EchoRequest(count=300)):
        assert reply.index == got
        got += 1
        if got % 50 == 0:
            await asyncio.sleep(0.05)  # well under the 1 s limit
    assert got == 300
