from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.health.v1 import health_grpc, health_pb2

from arun.plugin.grpc import PartialServicer
from arun.server import catalog, coalesce
from arun.server.grpc import GRPCServer, ServiceTable
from arun.testing import rawgrpc

HEALTH = catalog.services_of([health_pb2])


class FakeTransport:
    """What CoalescingTransport passes on, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": "peer"}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 7


async def test_writes_of_one_turn_go_out_as_one_in_order() -> None:
    fake = FakeTransport()
    t = coalesce.CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HEADERS")
    t.write(b"")
    t.write(bytearray(b"DATA"))
    t.writelines([b"TRAI", b"LERS"])
    assert fake.writes == []
    assert t.get_write_buffer_size() == 7 + len(b"HEADERSDATATRAILERS")
    await asyncio.sleep(0)
    assert fake.writes == [b"HEADERSDATATRAILERS"]
    t.write(b"next")
    await asyncio.sleep(0)
    assert fake.writes == [b"HEADERSDATATRAILERS", b"next"]
    assert t.get_extra_info("peername") == "peer"


async def test_large_writes_go_out_at_once() -> None:
    fake = FakeTransport()
    t = coalesce.CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"a")
    t.write(b"b" * coalesce.FLUSH_AT)
    assert fake.writes == [b"a" + b"b" * coalesce.FLUSH_AT]
    await asyncio.sleep(0)
    assert len(fake.writes) == 1


async def test_close_writes_what_is_pending_first_and_abort_drops_it() -> None:
    fake = FakeTransport()
    t = coalesce.CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"GOAWAY")
    t.close()
    assert fake.writes == [b"GOAWAY"] and fake.closed
    await asyncio.sleep(0)
    assert fake.writes == [b"GOAWAY"]

    fake2 = FakeTransport()
    t2 = coalesce.CoalescingTransport(fake2, asyncio.get_running_loop())  # type: ignore[arg-type]
    t2.write(b"lost")
    t2.abort()
    await asyncio.sleep(0)
    assert fake2.writes == [] and fake2.aborted


async def test_pending_writes_to_a_transport_closed_meanwhile_are_dropped() -> None:
    fake = FakeTransport()
    t = coalesce.CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"late")
    fake.closed = True  # the socket went away before the end of the turn
    await asyncio.sleep(0)
    assert fake.writes == []


# -- through the real server -------------------------------------------------------------------


class Health(PartialServicer):
    service = health_grpc.HealthBase

    async def Check(self, stream: Any) -> None:
        req = await stream.recv_message()
        await stream.send_message(health_pb2.HealthCheckResponse(status=len(req.service) % 3))

    async def Watch(self, stream: Any) -> None:
        req = await stream.recv_message()
        # As many answers as asked for, in one stream.
        for i in range(int(req.service)):
            await stream.send_message(health_pb2.HealthCheckResponse(status=i % 3))


@pytest.fixture
async def server() -> AsyncIterator[Path]:
    path = Path("/tmp") / f"arun-test-{uuid.uuid4().hex[:12]}.sock"
    table = ServiceTable()
    table.add(Health())
    srv = GRPCServer(table, HEALTH)
    await srv.start(path)
    try:
        yield path
    finally:
        await srv.close()
        path.unlink(missing_ok=True)


async def test_server_connections_go_through_the_coalescing_transport(
    server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # If grpclib stopped building its protocols through Server._protocol_factory, the writes
    # would silently go straight to the socket again: this notices.
    seen: list[coalesce.CoalescingTransport] = []
    made = coalesce.Coalescing.connection_made

    def spy(self: coalesce.Coalescing, transport: Any) -> None:
        made(self, transport)
        assert self.transport is not None
        seen.append(self.transport)

    monkeypatch.setattr(coalesce.Coalescing, "connection_made", spy)
    flushed: list[int] = []
    flush = coalesce.CoalescingTransport.flush

    def count(self: coalesce.CoalescingTransport) -> None:
        flushed.append(self._pending_size)
        flush(self)

    monkeypatch.setattr(coalesce.CoalescingTransport, "flush", count)
    async with Channel(path=str(server)) as ch:
        resp = await health_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="abc"))
    assert resp.status == 0
    assert len(seen) == 1
    assert any(n > 0 for n in flushed)


async def test_concurrent_unary_and_streaming_calls_on_one_connection(server: Path) -> None:
    async with Channel(path=str(server)) as ch:
        stub = health_grpc.HealthStub(ch)

        async def unary(i: int) -> None:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service="x" * i))
            assert resp.status == i % 3

        async def stream(n: int) -> None:
            async with stub.Watch.open() as s:
                await s.send_message(health_pb2.HealthCheckRequest(service=str(n)), end=True)
                got = [r.status async for r in s]
            assert got == [i % 3 for i in range(n)]

        await asyncio.gather(*(unary(i) for i in range(200)), stream(20_000), stream(3))


async def test_large_message_both_ways(server: Path) -> None:
    # 4 MiB in and out: the response crosses FLUSH_AT and HTTP/2 flow control many times.
    async with Channel(path=str(server)) as ch:
        big = "y" * (4 * 1024 * 1024 - 64)
        resp = await health_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=big))
        assert resp.status == len(big) % 3


async def test_unknown_path_answer_still_reaches_a_raw_client(server: Path) -> None:
    resp = await asyncio.to_thread(rawgrpc.call, str(server), "/no.Such/Thing")
    assert resp.grpc_status == 12
    assert resp.content_type is not None and resp.content_type.startswith("application/grpc")


async def test_client_that_hangs_up_mid_stream_leaves_the_server_serving(server: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(server))
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    s.close()
    async with Channel(path=str(server)) as ch:
        resp = await health_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="ab"))
        assert resp.status == 2


async def test_writes_made_while_receiving_wait_for_the_steps_started_meanwhile() -> None:
    # A PING ACK written in data_received and the answer of the request task started there go
    # out in one write, ACK first; without hold() the ACK's flush would run before the task.
    fake = FakeTransport()
    loop = asyncio.get_running_loop()
    t = coalesce.CoalescingTransport(fake, loop)  # type: ignore[arg-type]
    t.hold()
    t.write(b"PINGACK")
    loop.call_soon(t.write, b"ANSWER")  # the request task's first step
    await asyncio.sleep(0)  # nothing goes out while held, not even a turn later
    assert fake.writes == []
    loop.call_soon(t.write, b"MORE")
    t.release()
    await asyncio.sleep(0)
    assert fake.writes == [b"PINGACKANSWERMORE"]
    # Released with nothing pending: nothing scheduled, later writes flush as before.
    t.hold()
    t.release()
    await asyncio.sleep(0)
    t.write(b"late")
    await asyncio.sleep(0)
    assert fake.writes == [b"PINGACKANSWERMORE", b"late"]


async def test_large_writes_go_out_at_once_even_while_held() -> None:
    fake = FakeTransport()
    t = coalesce.CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.hold()
    t.write(b"c" * coalesce.FLUSH_AT)
    assert fake.writes == [b"c" * coalesce.FLUSH_AT]
    t.release()


class WritingProtocol(asyncio.Protocol):
    """Writes in data_received and from a task started there, as grpclib does for PING + request."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"ack:" + data)
        transport = self.transport

        async def answer() -> None:
            transport.write(b"|answer")

        self.tasks.append(asyncio.get_running_loop().create_task(answer()))


async def test_protocol_holds_writes_for_the_length_of_data_received() -> None:
    fake = FakeTransport()
    inner = WritingProtocol()
    proto = coalesce.Coalescing(inner)
    proto.connection_made(fake)  # type: ignore[arg-type]
    proto.data_received(b"ping")
    await asyncio.gather(*inner.tasks)
    await asyncio.sleep(0)
    assert fake.writes == [b"ack:ping|answer"]


def _frames(data: bytes) -> list[tuple[int, int, int]]:
    """(type, flags, stream id) of each HTTP/2 frame in ``data``."""
    out = []
    while data:
        length = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF))
        data = data[9 + length :]
    return out


async def test_ping_ack_and_the_answer_to_a_request_in_the_same_read_leave_in_one_write(
    server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a grpc-go client does after each answer: PING (BDP estimator), then its next request,
    # arriving in one read. grpclib answers the PING inside data_received and the request in a
    # task it starts there; both must reach the socket in one write, the PING ACK first.
    import h2.config
    import h2.connection

    flushed: list[bytes] = []
    flush = coalesce.CoalescingTransport.flush

    def record(self: coalesce.CoalescingTransport) -> None:
        if self._pending:
            flushed.append(b"".join(self._pending))
        flush(self)

    monkeypatch.setattr(coalesce.CoalescingTransport, "flush", record)

    def client() -> None:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(server))
        try:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            s.sendall(conn.data_to_send())
            # The server's SETTINGS and its ACK of ours.
            acked = False
            while not acked:
                events = conn.receive_data(s.recv(65536))
                s.sendall(conn.data_to_send())
                acked = any(type(e).__name__ == "SettingsAcknowledged" for e in events)
            flushed.clear()
            sid = conn.get_next_available_stream_id()
            conn.ping(b"12345678")
            conn.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/grpc.health.v1.Health/Check"),
                    (":authority", "localhost"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )
            conn.send_data(sid, rawgrpc.frame_message(b"\n\x01a"), end_stream=True)
            s.sendall(conn.data_to_send())
            ended = False
            while not ended:
                chunk = s.recv(65536)
                assert chunk, "server hung up"
                ended = any(type(e).__name__ == "StreamEnded" for e in conn.receive_data(chunk))
        finally:
            s.close()

    await asyncio.to_thread(client)
    ping_ack = (6, 1, 0)
    answer = [f for f in _frames(b"".join(flushed)) if f[2] == 1]
    assert [f[0] for f in answer] == [1, 0, 1]  # HEADERS, DATA, trailing HEADERS
    first = _frames(flushed[0])
    assert first[0] == ping_ack and [f for f in first if f[2] == 1] == answer
