from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from arun.cri.streaming.server import StreamingConfig, StreamingServer
from arun.testing.streaming import FakeStreamingRuntime, greeter, upper_echo


@pytest.fixture
def runtime() -> FakeStreamingRuntime:
    rt = FakeStreamingRuntime()
    rt.add_container("ctr")
    rt.add_service("pod", 80, upper_echo)
    rt.add_service("pod", 25, greeter)
    return rt


@pytest.fixture
def make_server(runtime: FakeStreamingRuntime) -> Callable[..., object]:
    @asynccontextmanager
    async def make(**settings: object) -> AsyncIterator[StreamingServer]:
        server = StreamingServer(runtime, StreamingConfig(**settings))  # type: ignore[arg-type]
        await server.start()
        try:
            yield server
        finally:
            await server.stop()

    return make


@pytest.fixture
async def server(runtime: FakeStreamingRuntime) -> AsyncIterator[StreamingServer]:
    srv = StreamingServer(runtime, StreamingConfig(close_grace=5))
    await srv.start()
    yield srv
    await srv.stop()
