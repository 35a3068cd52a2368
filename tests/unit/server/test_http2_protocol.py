"""The daemon's gRPC server on arun's HTTP/2 connection (the default) and on h2's (ARUN_GRPC_H2=h2)."""

from __future__ import annotations

import asyncio
import socket
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Handler
from grpclib.health.v1 import health_grpc, health_pb2
from h2.errors import ErrorCodes

from arun.plugin.grpc import PartialServicer
from arun.server import catalog
from arun.server.grpc import H2_ENV, GRPCServer, ServiceTable
from arun.server.http2.connection import ServerConnection
from arun.server.http2.protocol import LeanH2Protocol

HEALTH = catalog.services_of([health_pb2])


class Health(PartialServicer):
    service = health_grpc.HealthBase

    async def Check(self, stream: Any) -> None:
        req = await stream.recv_message()
        await stream.send_message(health_pb2.HealthCheckResponse(status=len(req.service) % 3))


UPLOAD = "/grpc.health.v1.Health/Watch"


class Upload:
    """Health/Watch served as a bidirectional stream, like Content.Write: reads every request until
    the client ends its side, then answers once per request."""

    def __mapping__(self) -> dict[str, Handler]:
        return {
            UPLOAD: Handler(
                self.upload,
                Cardinality.STREAM_STREAM,
                health_pb2.HealthCheckRequest,
                health_pb2.HealthCheckResponse,
            )
        }

    async def upload(self, stream: Any) -> None:
        got = [req async for req in stream]
        for i, _ in enumerate(got):
            await stream.send_message(health_pb2.HealthCheckResponse(status=i % 3))


async def serve(monkeypatch: pytest.MonkeyPatch, variant: str) -> tuple[GRPCServer, Path]:
    if variant:
        monkeypatch.setenv(H2_ENV, variant)
    else:
        monkeypatch.delenv(H2_ENV, raising=False)
    path = Path("/tmp") / f"arun-test-{uuid.uuid4().hex[:12]}.sock"
    table = ServiceTable()
    table.add(Health())
    table.add(Upload())
    srv = GRPCServer(table, HEALTH)
    await srv.start(path)
    return srv, path


@pytest.fixture(params=["", "h2"], ids=["lean", "h2"])
async def server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Any, Path]]:
    srv, path = await serve(monkeypatch, request.param)
    try:
        yield srv, path
    finally:
        await srv.close()
        path.unlink(missing_ok=True)


async def test_the_variant_is_chosen_by_the_environment(server: tuple[Any, Path]) -> None:
    srv, path = server
    lean = srv._server._lean
    async with Channel(path=str(path)) as ch:
        resp = await health_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="abcd"))
        assert resp.status == 1
        (proto,) = list(srv._server._protocols)
        assert isinstance(proto, LeanH2Protocol) == lean
        connection = proto.connection._connection
        assert isinstance(connection, ServerConnection if lean else h2.connection.H2Connection)


async def test_client_streaming_upload_larger_than_every_window(server: tuple[Any, Path]) -> None:
    # 40 requests of 256 KiB on one stream: ~10 MiB through 4 MiB windows, as ctr's Content.Write.
    _, path = server
    async with (
        Channel(path=str(path)) as ch,
        ch.request(
            UPLOAD, Cardinality.STREAM_STREAM, health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ) as stream,
    ):
        for _ in range(40):
            await stream.send_message(health_pb2.HealthCheckRequest(service="u" * (256 * 1024)))
        await stream.end()
        got = [r.status for r in [await stream.recv_message() for _ in range(40)] if r is not None]
    assert got == [i % 3 for i in range(40)]


async def test_many_sequential_calls_leave_no_streams_behind(server: tuple[Any, Path]) -> None:
    srv, path = server
    async with Channel(path=str(path)) as ch:
        stub = health_grpc.HealthStub(ch)
        for i in range(300):
            assert (await stub.Check(health_pb2.HealthCheckRequest(service="x" * i))).status == i % 3
        (proto,) = list(srv._server._protocols)
        connection = proto.connection._connection
        if isinstance(connection, ServerConnection):
            assert connection.streams == {}


def goaway_after(path: Path, bad: bytes) -> Any:
    """Send a preface, SETTINGS and ``bad``; return the error code of the GOAWAY that comes back."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(client.data_to_send() + bad)
        while True:
            data = s.recv(65536)
            if not data:
                return None
            for event in client.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    return event.error_code


async def test_a_protocol_error_reaches_the_client_as_goaway(monkeypatch: pytest.MonkeyPatch) -> None:
    srv, path = await serve(monkeypatch, "")
    try:
        ping_on_a_stream = struct.pack(">BHBBL", 0, 8, 6, 0, 1) + b"x" * 8
        assert await asyncio.to_thread(goaway_after, path, ping_on_a_stream) == ErrorCodes.PROTOCOL_ERROR
        async with Channel(path=str(path)) as ch:
            # The server still serves.
            resp = await health_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="ab"))
            assert resp.status == 2
    finally:
        await srv.close()
        path.unlink(missing_ok=True)
