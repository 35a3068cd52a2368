"""Fixtures for the asyncio edge: an Echo server on a temporary unix socket and its clients."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from arun.testing.ttrpc import ECHO_SERVICE, EchoResponse, echo_descriptor
from arun.ttrpc import Client, Server, ServiceStub, StatusError, metadata


class Echo:
    """The test service. ``text`` drives behaviour: ``raise:<code>``, ``boom``, ``hang``."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled: list[str] = []
        self.finished: list[str] = []
        self.seen_metadata: list[dict[str, list[str]]] = []

    async def Unary(self, req: Any) -> Any:
        self.started.set()
        self.seen_metadata.append(dict(metadata.current()))
        try:
            if req.text.startswith("raise:"):
                raise StatusError(int(req.text[6:]), "as asked")
            if req.text == "boom":
                raise RuntimeError("boom")
            if req.text == "missing":
                raise FileNotFoundError("no such thing")
            if req.text == "none":
                return None
            if req.text == "hang":
                await asyncio.Event().wait()
            if req.sleep_ms:
                await asyncio.sleep(req.sleep_ms / 1000)
            return EchoResponse(text=req.text, blob=req.blob)
        except asyncio.CancelledError:
            self.cancelled.append(req.text)
            raise
        finally:
            self.finished.append(req.text)

    async def ServerStream(self, req: Any) -> AsyncIterator[Any]:
        self.started.set()
        try:
            for i in range(req.count):
                if req.sleep_ms:
                    await asyncio.sleep(req.sleep_ms / 1000)
                yield EchoResponse(text=req.text, index=i)
            if req.text == "fail-after":
                raise StatusError(9, "stream failed")
            if req.text == "hang":
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append("ServerStream")
            raise

    async def ClientStream(self, reqs: AsyncIterator[Any]) -> Any:
        self.started.set()
        texts = []
        async for r in reqs:
            if r.text == "fail":
                raise StatusError(11, "stop here")
            texts.append(r.text)
        return EchoResponse(text=",".join(texts), index=len(texts))

    async def Bidi(self, reqs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        self.started.set()
        i = 0
        async for r in reqs:
            yield EchoResponse(text=r.text.upper(), index=i)
            i += 1


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # Short paths: sun_path holds 108 bytes, pytest's tmp_path can be longer.
    d = tempfile.mkdtemp(prefix="ttrpc-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sock_path(sock_dir: str) -> str:
    return os.path.join(sock_dir, "s")


@pytest_asyncio.fixture
async def echo() -> Echo:
    return Echo()


@pytest_asyncio.fixture
async def server(sock_path: str, echo: Echo) -> AsyncIterator[Server]:
    srv = Server()
    srv.register(ECHO_SERVICE, echo)
    await srv.serve_unix(sock_path)
    yield srv
    await srv.close()


@pytest_asyncio.fixture
async def client(server: Server, sock_path: str) -> AsyncIterator[Client]:
    c = await Client.connect(f"unix://{sock_path}")
    yield c
    await c.close()


@pytest_asyncio.fixture
async def stub(client: Client) -> ServiceStub:
    return ServiceStub(client, echo_descriptor)


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def assert_no_tasks_left() -> None:
    """Every task started by the code under test has finished (a few loop turns allowed)."""
    for _ in range(50):
        if not other_tasks():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"tasks left running: {other_tasks()}")
