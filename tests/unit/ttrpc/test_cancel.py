"""Cancellation: callers giving up, peers vanishing, shutdown; nothing leaks."""

from __future__ import annotations

import asyncio

import pytest

from arun.testing.ttrpc import ECHO_SERVICE, EchoRequest, echo_descriptor
from arun.ttrpc import Client, Server, ServiceStub

from .conftest import Echo, assert_no_tasks_left

pytestmark = pytest.mark.asyncio


async def test_cancelled_call_forgets_its_stream(stub: ServiceStub, client: Client, echo: Echo) -> None:
    call = asyncio.create_task(stub.Unary(EchoRequest(text="late", sleep_ms=100)))
    await echo.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert client._conn.open_streams == 0 and not client._calls
    await asyncio.sleep(0.2)  # the server still answers (ttrpc cannot tell it); the reply is dropped
    assert echo.finished == ["late"] and echo.cancelled == []
    assert (await stub.Unary(EchoRequest(text="after"))).text == "after"


async def test_cancel_under_timeout_is_still_a_cancel(stub: ServiceStub, client: Client, echo: Echo) -> None:
    call = asyncio.create_task(stub.Unary(EchoRequest(text="hang"), timeout=10))
    await echo.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert client._conn.open_streams == 0


async def test_cancelled_recv_leaves_the_stream_usable(stub: ServiceStub) -> None:
    async with stub.Bidi() as stream:
        waiting = asyncio.create_task(stream.recv())
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await stream.send(EchoRequest(text="x"))
        assert (await stream.recv()).text == "X"
        await stream.close_send()
        assert await stream.recv() is None


async def test_abandoned_stream_is_forgotten(stub: ServiceStub, client: Client) -> None:
    async with stub.ServerStream(EchoRequest(count=1000)) as stream:
        assert (await stream.recv()).index == 0
    # Leaving the block forgets the stream; what the server still sends is dropped.
    assert client._conn.open_streams == 0 and not client._streams
    await asyncio.sleep(0.05)
    assert (await stub.Unary(EchoRequest(text="ok"))).text == "ok"


async def test_handler_cleanup_runs_when_the_client_vanishes(server: Server, sock_path: str) -> None:
    cleaned = asyncio.Event()

    class Slow:
        async def Unary(self, req: object) -> object:
            try:
                await asyncio.Event().wait()
            finally:
                # Cleanup that must complete even though we are being cancelled.
                await asyncio.shield(asyncio.sleep(0.01))
                cleaned.set()
            raise AssertionError("unreachable")

    srv = Server()
    srv.register(ECHO_SERVICE, Slow())
    path = sock_path + "2"
    await srv.serve_unix(path)
    c = await Client.connect(path)
    call = asyncio.create_task(ServiceStub(c, echo_descriptor).Unary(EchoRequest()))
    await asyncio.sleep(0.05)
    await c.close()
    await asyncio.wait_for(cleaned.wait(), 2)
    with pytest.raises(Exception):  # noqa: B017 - ClosedError; asserted in the server/client tests
        await call
    await srv.close()
    await assert_no_tasks_left()


async def test_close_while_calls_are_being_made(sock_path: str, echo: Echo) -> None:
    srv = Server()
    srv.register(ECHO_SERVICE, echo)
    await srv.serve_unix(sock_path)
    c = await Client.connect(sock_path)
    stub = ServiceStub(c, echo_descriptor)
    calls = [asyncio.create_task(stub.Unary(EchoRequest(text=f"{i}", sleep_ms=i % 7))) for i in range(200)]
    await asyncio.sleep(0.002)
    await srv.close()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(not isinstance(r, BaseException) or type(r).__name__ == "ClosedError" for r in results)
    await c.close()
    await assert_no_tasks_left()


async def test_shutdown_of_a_server_with_no_connections_returns_at_once(sock_path: str) -> None:
    srv = Server()
    await srv.serve_unix(sock_path)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await srv.shutdown(grace=10)
    assert loop.time() - t0 < 1
    await assert_no_tasks_left()


async def test_handler_raising_cancelled_by_itself_still_ends_its_stream(sock_path: str) -> None:
    class SelfCancel:
        async def Unary(self, req: object) -> object:
            raise asyncio.CancelledError()

    srv = Server()
    srv.register(ECHO_SERVICE, SelfCancel())
    await srv.serve_unix(sock_path)
    try:
        async with await Client.connect(sock_path) as c:
            from arun.ttrpc import StatusError

            with pytest.raises(StatusError) as info:
                await asyncio.wait_for(ServiceStub(c, echo_descriptor).Unary(EchoRequest()), 5)
            assert info.value.code == 1  # CANCELLED, rather than a stream left open forever
    finally:
        await srv.close()
    await assert_no_tasks_left()
