from __future__ import annotations

import logging
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from arun import deadline, errdefs, namespaces
from arun import log as arun_log
from arun.errdefs import grpc as egrpc
from arun.plugin import PluginType, Registration
from arun.plugin.context import Meta, Plugin, PluginSet
from arun.plugin.ttrpc import TTRPCRegistrar
from arun.server.ttrpc import TTRPCServer
from arun.testing.ttrpc import ECHO_SERVICE, EchoRequest, EchoResponse, echo_descriptor
from arun.ttrpc import Client, ServiceStub


@pytest.fixture
def sock_path() -> Iterator[Path]:
    p = Path("/tmp") / f"arun-ttrpc-{uuid.uuid4().hex[:12]}.sock"
    yield p
    p.unlink(missing_ok=True)


class Echo:
    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def register_ttrpc(self, server: TTRPCRegistrar) -> None:
        server.register(ECHO_SERVICE, self)

    async def Unary(self, req: Any) -> Any:
        self.seen = {
            "namespace": namespaces.current(),
            "remaining": deadline.remaining(),
            "method": arun_log.method.get(),
            "request_id": arun_log.request_id.get(),
        }
        if req.text == "missing":
            raise errdefs.NotFoundError("task 't1': not found")
        if req.text == "bug":
            raise KeyError("detail")
        return EchoResponse(text=req.text)


async def _init(ic: Any) -> object:
    return None


@pytest.fixture
async def served(sock_path: Path) -> AsyncIterator[tuple[TTRPCServer, Echo, ServiceStub]]:
    echo = Echo()
    plugins = PluginSet()
    plugins.add(Plugin(Registration(PluginType.EVENT, "exchange", _init), Meta(), echo))
    plugins.add(Plugin(Registration(PluginType.TTRPC, "broken", _init), Meta(), Echo(), error=RuntimeError()))
    server = TTRPCServer()
    server.register_plugins(plugins)
    assert server.served() == {ECHO_SERVICE: "io.containerd.event.v1.exchange"}
    await server.start(sock_path)
    client = await Client.connect(
        str(sock_path),
        from_status=egrpc.from_code,
        deadline=deadline.remaining,
        metadata=lambda: [(namespaces.TTRPC_HEADER, namespaces.current() or "")],
    )
    yield server, echo, ServiceStub(client, echo_descriptor)
    await client.close()
    await server.close()


async def test_context_and_errors(served: tuple[TTRPCServer, Echo, ServiceStub], sock_path: Path) -> None:
    _, echo, stub = served
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660
    with namespaces.use("k8s.io"), deadline.use(20):
        assert (await stub.Unary(EchoRequest(text="hi"))).text == "hi"
    assert echo.seen["namespace"] == "k8s.io"
    assert 0 < echo.seen["remaining"] <= 20
    assert echo.seen["method"] == f"/{ECHO_SERVICE}/Unary"
    assert echo.seen["request_id"]
    with pytest.raises(errdefs.NotFoundError, match="task 't1': not found"):
        await stub.Unary(EchoRequest(text="missing"))
    with pytest.raises(errdefs.UnknownError) as ei:
        await stub.Unary(EchoRequest(text="bug"))
    assert ei.value.message == f"internal error (request {echo.seen['request_id']})"


async def test_start_and_end_lines(served: tuple[TTRPCServer, Echo, ServiceStub], caplog: Any) -> None:
    _, _, stub = served
    caplog.set_level(logging.DEBUG, logger="arun.server.ttrpc")
    caplog.handler.addFilter(arun_log.ContextFilter())
    with namespaces.use("default"):
        await stub.Unary(EchoRequest(text="x"))
    lines = [r for r in caplog.records if r.name == "arun.server.ttrpc"]
    assert [r.getMessage() for r in lines] == ["request started", "request done"]
    assert {r.__dict__["namespace"] for r in lines} == {"default"}
    assert lines[0].levelno == logging.INFO  # "Unary" is not a read


async def test_shutdown_removes_the_socket(sock_path: Path) -> None:
    server = TTRPCServer()
    await server.start(sock_path)
    second = TTRPCServer()
    with pytest.raises(errdefs.FailedPreconditionError, match="another daemon"):
        await second.start(sock_path)
    await server.shutdown(1)
    assert not sock_path.exists()
