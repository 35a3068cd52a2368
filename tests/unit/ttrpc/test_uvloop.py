"""The daemon may run on uvloop: the ttrpc edges work there too (its transports differ)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

import pytest
import uvloop

from arun.testing.ttrpc import ECHO_SERVICE, EchoRequest, echo_descriptor
from arun.ttrpc import Client, ClosedError, Code, Server, ServiceStub, StatusError, require_same_user

from .conftest import Echo, other_tasks


async def scenario(path: str) -> None:
    echo = Echo()
    srv = Server(peer_check=require_same_user)
    srv.register(ECHO_SERVICE, echo)
    await srv.serve_unix(path)
    closed = asyncio.Event()
    c = await Client.connect(f"unix://{path}", on_close=closed.set)
    stub = ServiceStub(c, echo_descriptor)
    assert (await stub.Unary(EchoRequest(text="uv"))).text == "uv"
    big = os.urandom(3 << 20)
    assert (await stub.Unary(EchoRequest(blob=big))).blob == big
    assert [r.index async for r in stub.ServerStream(EchoRequest(count=300))] == list(range(300))
    async with stub.Bidi() as s:
        await s.send(EchoRequest(text="b"))
        assert (await s.recv()).text == "B"
        await s.close_send()
        assert await s.recv() is None
    with pytest.raises(StatusError) as info:
        await stub.Unary(EchoRequest(text="hang"), timeout=0.05)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    pending = asyncio.create_task(stub.Unary(EchoRequest(text="hang")))
    await asyncio.sleep(0.05)
    await srv.shutdown(grace=0.1)
    with pytest.raises(ClosedError):
        await pending
    await asyncio.wait_for(closed.wait(), 5)
    await c.close()
    for _ in range(50):
        if not other_tasks():
            break
        await asyncio.sleep(0.01)
    assert not other_tasks()


async def bounded(path: str) -> None:
    async with asyncio.timeout(30):
        await scenario(path)


def test_ttrpc_on_uvloop() -> None:
    d = tempfile.mkdtemp(prefix="ttrpc-")
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(bounded(os.path.join(d, "s")))
    finally:
        shutil.rmtree(d, ignore_errors=True)
