from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.health.v1 import health_grpc, health_pb2

from arun import deadline, errdefs, namespaces
from arun import log as arun_log
from arun.plugin import PluginType, Registration
from arun.plugin.context import Meta, Plugin, PluginSet
from arun.plugin.grpc import GRPCRegistrar, PartialServicer
from arun.server import catalog
from arun.server.grpc import GRPCServer, ServiceTable
from arun.testing import rawgrpc

HEALTH = catalog.services_of([health_pb2])
CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    # unix socket paths are limited to 108 bytes; pytest's tmp_path can be long.
    p = Path("/tmp") / f"arun-test-{uuid.uuid4().hex[:12]}.sock"
    yield p
    p.unlink(missing_ok=True)


class Recorder:
    """What the handler saw of the request context."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}


class CheckOnly(PartialServicer):
    service = health_grpc.HealthBase

    def __init__(self, rec: Recorder, behaviour: str = "ok") -> None:
        self.rec = rec
        self.behaviour = behaviour

    async def Check(self, stream: Any) -> None:
        req = await stream.recv_message()
        self.rec.seen.update(
            namespace=namespaces.current(),
            request_id=arun_log.request_id.get(),
            method=arun_log.method.get(),
            remaining=deadline.remaining(),
            service=req.service,
        )
        if self.behaviour == "notfound":
            raise errdefs.NotFoundError("container 'x' in namespace 'default': not found")
        if self.behaviour == "bug":
            raise KeyError("oops")
        if self.behaviour == "builtin":
            raise FileNotFoundError(2, "No such file or directory", "/nope")
        if self.behaviour == "slow":
            await asyncio.sleep(0.3)
        await stream.send_message(health_pb2.HealthCheckResponse(status=SERVING))


async def start(sock_path: Path, *servicers: Any) -> GRPCServer:
    table = ServiceTable()
    for s in servicers:
        table.add(s)
    server = GRPCServer(table, HEALTH)
    await server.start(sock_path)
    return server


@pytest.fixture
async def running(sock_path: Path) -> AsyncIterator[tuple[GRPCServer, Recorder, Channel]]:
    rec = Recorder()
    server = await start(sock_path, CheckOnly(rec))
    ch = Channel(path=str(sock_path))
    yield server, rec, ch
    ch.close()
    await server.close()


async def check(ch: Channel, **kw: Any) -> health_pb2.HealthCheckResponse:
    stub = health_grpc.HealthStub(ch)
    return await stub.Check(health_pb2.HealthCheckRequest(service="svc"), **kw)


async def test_request_context_is_set(running: tuple[GRPCServer, Recorder, Channel]) -> None:
    _, rec, ch = running
    resp = await check(ch, metadata={"containerd-namespace": "k8s.io"}, timeout=30)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    assert rec.seen["namespace"] == "k8s.io"
    assert rec.seen["method"] == CHECK
    assert len(rec.seen["request_id"]) == 16
    assert 0 < rec.seen["remaining"] <= 30
    assert rec.seen["service"] == "svc"


async def test_no_namespace_header_leaves_it_unset(running: tuple[GRPCServer, Recorder, Channel]) -> None:
    _, rec, ch = running
    await check(ch)
    assert rec.seen["namespace"] is None
    assert rec.seen["remaining"] is None


@pytest.mark.parametrize(
    ("behaviour", "status", "message"),
    [
        ("notfound", Status.NOT_FOUND, "container 'x' in namespace 'default': not found"),
        ("builtin", Status.NOT_FOUND, "No such file or directory: '/nope'"),
    ],
)
async def test_errdefs_map_to_status(sock_path: Path, behaviour: str, status: Status, message: str) -> None:
    server = await start(sock_path, CheckOnly(Recorder(), behaviour))
    try:
        async with Channel(path=str(sock_path)) as ch:
            with pytest.raises(GRPCError) as ei:
                await check(ch)
        assert ei.value.status is status
        assert ei.value.message == message
    finally:
        await server.close()


async def test_unexpected_error_is_unknown_with_request_id_and_logged_once(
    sock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start(sock_path, CheckOnly(Recorder(), "bug"))
    caplog.set_level(logging.DEBUG)
    try:
        async with Channel(path=str(sock_path)) as ch:
            with pytest.raises(GRPCError) as ei:
                await check(ch)
    finally:
        await server.close()
    assert ei.value.status is Status.UNKNOWN
    assert ei.value.message is not None
    assert ei.value.message.startswith("internal error (request ")
    rid = ei.value.message.removeprefix("internal error (request ").rstrip(")")
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert tracebacks[0].levelno == logging.ERROR
    assert "KeyError" in caplog.text
    assert any(getattr(r, "request_id", None) == rid for r in tracebacks) or rid in caplog.text


async def test_one_start_and_one_end_line(running: tuple[GRPCServer, Recorder, Channel], caplog: Any) -> None:
    _, _, ch = running
    caplog.set_level(logging.DEBUG, logger="arun.server.middleware")
    caplog.handler.addFilter(arun_log.ContextFilter())
    await check(ch, metadata={"containerd-namespace": "default"})
    lines = [r for r in caplog.records if r.name == "arun.server.middleware"]
    assert [r.getMessage() for r in lines] == ["request started", "request done"]
    # Check is a read: DEBUG.
    assert {r.levelno for r in lines} == {logging.DEBUG}
    assert all(r.__dict__.get("method") == CHECK for r in lines)
    assert all(r.__dict__.get("namespace") == "default" for r in lines)
    assert lines[0].__dict__["request_id"] == lines[1].__dict__["request_id"]
    assert lines[1].__dict__["status"] == "OK"


async def test_missing_method_of_partial_servicer_is_unimplemented(
    running: tuple[GRPCServer, Recorder, Channel],
) -> None:
    server, _, _ = running
    assert server.path is not None
    resp = await asyncio.to_thread(rawgrpc.call, str(server.path), WATCH)
    assert resp.grpc_status == 12
    assert resp.content_type is not None and resp.content_type.startswith("application/grpc")


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("/grpc.health.v1.Health/Nope", "unknown method Nope for service grpc.health.v1.Health"),
        ("/no.such.Service/Call", "unknown service no.such.Service"),
    ],
)
async def test_unknown_paths_answer_unimplemented_with_content_type(
    sock_path: Path, method: str, message: str
) -> None:
    server = await start(sock_path)
    try:
        resp = await asyncio.to_thread(rawgrpc.call, str(sock_path), method)
    finally:
        await server.close()
    assert resp.grpc_status == 12
    assert resp.content_type is not None and resp.content_type.startswith("application/grpc")
    assert resp.all_headers["grpc-message"] == message


async def test_unserved_service_falls_back_to_unimplemented(sock_path: Path) -> None:
    server = await start(sock_path)  # nothing registered at all
    try:
        async with Channel(path=str(sock_path)) as ch:
            with pytest.raises(GRPCError) as ei:
                await check(ch)
        resp = await asyncio.to_thread(rawgrpc.call, str(sock_path), CHECK)
    finally:
        await server.close()
    assert ei.value.status is Status.UNIMPLEMENTED
    assert ei.value.message == "method Check not implemented"
    assert resp.grpc_status == 12
    assert resp.content_type is not None and resp.content_type.startswith("application/grpc")


def test_real_handler_replaces_fallback_and_duplicates_conflict() -> None:
    class WatchOnly(PartialServicer):
        service = health_grpc.HealthBase

        async def Watch(self, stream: Any) -> None: ...

    class Both(health_grpc.HealthBase):
        async def Check(self, stream: Any) -> None: ...
        async def Watch(self, stream: Any) -> None: ...

    table = ServiceTable()
    table.owner = "io.containerd.grpc.v1.a"
    table.add(CheckOnly(Recorder()))  # Check real, Watch a fallback
    assert table.served() == {CHECK: "io.containerd.grpc.v1.a"}
    table.owner = "io.containerd.grpc.v1.b"
    table.add(WatchOnly())  # Watch real now; its Check fallback does not conflict with a's Check
    assert table.served() == {CHECK: "io.containerd.grpc.v1.a", WATCH: "io.containerd.grpc.v1.b"}
    routes = table.routes(HEALTH)
    assert set(routes) == {CHECK, WATCH}
    table.owner = "io.containerd.grpc.v1.c"
    with pytest.raises(errdefs.AlreadyExistsError, match=r"served by both 'io\.containerd\.grpc\.v1\.a' and"):
        table.add(Both())


def test_register_plugins_calls_register_of_grpc_plugins_only() -> None:
    calls: list[str] = []

    class Svc:
        def __init__(self, name: str) -> None:
            self.name = name

        def register(self, server: GRPCRegistrar) -> None:
            calls.append(self.name)

    async def init(ic: Any) -> object:
        return None

    plugins = PluginSet()
    plugins.add(Plugin(Registration(PluginType.GRPC, "a", init), Meta(), Svc("a")))
    plugins.add(Plugin(Registration(PluginType.SERVICE, "b", init), Meta(), Svc("b")))
    plugins.add(Plugin(Registration(PluginType.GRPC, "c", init), Meta(), Svc("c"), error=RuntimeError("x")))
    plugins.add(Plugin(Registration(PluginType.GRPC, "d", init), Meta(), object()))
    ServiceTable().register_plugins(plugins)
    assert calls == ["a"]


async def test_socket_mode_and_stale_and_live(sock_path: Path) -> None:
    # A stale socket file (bound, nobody listening) is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))
    stale.close()
    server = await start(sock_path)
    try:
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660
        second = GRPCServer(ServiceTable(), HEALTH)
        with pytest.raises(errdefs.FailedPreconditionError, match="another daemon is serving"):
            await second.start(sock_path)
        assert sock_path.exists()  # the live socket was left alone
    finally:
        await server.close()
    assert not sock_path.exists()


async def test_regular_file_is_not_replaced(sock_path: Path) -> None:
    sock_path.write_text("keep me")
    with pytest.raises(errdefs.FailedPreconditionError, match="not a socket"):
        await GRPCServer(ServiceTable(), HEALTH).start(sock_path)
    assert sock_path.read_text() == "keep me"


async def test_drain_waits_for_running_requests_then_refuses_new_ones(sock_path: Path) -> None:
    server = await start(sock_path, CheckOnly(Recorder(), "slow"))
    try:
        async with Channel(path=str(sock_path)) as ch:
            running = asyncio.create_task(check(ch))
            while server.tracker.active == 0:
                await asyncio.sleep(0.01)
            server.stop_accepting()
            assert not sock_path.exists()
            with pytest.raises(GRPCError) as ei:
                await check(ch)  # same connection, new request
            assert ei.value.status is Status.UNAVAILABLE
            assert await server.drain(10)
            assert (await running).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.close()


async def test_drain_times_out_and_close_cancels(sock_path: Path) -> None:
    server = await start(sock_path, CheckOnly(Recorder(), "slow"))
    async with Channel(path=str(sock_path)) as ch:
        running = asyncio.create_task(check(ch, timeout=5))
        while server.tracker.active == 0:
            await asyncio.sleep(0.01)
        server.stop_accepting()
        assert not await server.drain(0.01)
        await server.close()
        # The client learns at once (its own timeout is 5 s): the connection is hung up.
        with pytest.raises(StreamTerminatedError):
            await running
    assert server.tracker.active == 0
