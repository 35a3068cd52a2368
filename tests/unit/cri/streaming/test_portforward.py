"""Port-forward over SPDY, SPDY-in-WebSocket and WebSocket channel pairs, against the real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.streaming import channels
from arun.cri.streaming import constants as c
from arun.cri.streaming.runtime import DuplexStream
from arun.cri.streaming.server import StreamingServer
from arun.cri.streaming.session import StreamResetError
from arun.testing import streamclient as sc
from arun.testing.streaming import FakeStreamingRuntime

TIMEOUT = 20


def pf_url(server: StreamingServer, ports: list[int] | None = None, sandbox: str = "pod") -> str:
    return server.get_port_forward(api_pb2.PortForwardRequest(pod_sandbox_id=sandbox, port=ports or [])).url


@pytest.fixture
async def tcp_echo() -> AsyncIterator[int]:
    """A real TCP server on loopback: reads until EOF, then answers with what it got, reversed, and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("websocket", [False, True], ids=["spdy", "spdy-over-websocket"])
async def test_forward_many_connections(server: StreamingServer, websocket: bool) -> None:
    client = await sc.PortForwardClient.connect(pf_url(server), websocket=websocket)
    try:
        assert client.client.protocol == c.PORTFORWARD_V1
        first = await asyncio.wait_for(client.forward(80, b"hello"), TIMEOUT)
        assert (first.data, first.error) == (b"HELLO", "")
        results = await asyncio.wait_for(
            asyncio.gather(*(client.forward(80, f"conn {i}".encode()) for i in range(10))), TIMEOUT
        )
        assert [r.data for r in results] == [f"CONN {i}".encode() for i in range(10)]
        big = bytes(range(97, 123)) * 40000  # ~1 MiB
        assert (await asyncio.wait_for(client.forward(80, big), TIMEOUT)).data == big.upper()
    finally:
        await client.close()


async def test_forward_to_real_tcp_with_half_close(
    server: StreamingServer, runtime: FakeStreamingRuntime, tcp_echo: int
) -> None:
    """The client's FIN becomes shutdown(SHUT_WR) toward the pod; the pod's answer and EOF come back."""
    runtime.map_port("web", 8080, tcp_echo)
    client = await sc.PortForwardClient.connect(pf_url(server, sandbox="web"))
    try:
        result = await asyncio.wait_for(client.forward(8080, b"abcdef"), TIMEOUT)
        assert (result.data, result.error) == (b"fedcba", "")
        call = runtime.calls[-1]
        assert (call.kind, call.target, call.port) == ("port_forward", "web", 8080)
    finally:
        await client.close()


async def test_pod_speaks_first_and_closes(server: StreamingServer) -> None:
    client = await sc.PortForwardClient.connect(pf_url(server))
    try:
        result = await asyncio.wait_for(client.forward(25, b"", half_close=False), TIMEOUT)
        assert (result.data, result.error) == (b"hello\n", "")
    finally:
        await client.close()


async def test_forward_error_is_reported_on_the_error_stream(server: StreamingServer) -> None:
    client = await sc.PortForwardClient.connect(pf_url(server))
    try:
        result = await asyncio.wait_for(client.forward(81, b"x"), TIMEOUT)
        assert result.data == b""
        assert result.error == (
            "error forwarding port 81 to pod pod, uid : "
            "failed to connect to localhost:81 inside namespace 'pod'"
        )
        # the connection survives a failed forward
        assert (await asyncio.wait_for(client.forward(80, b"ok"), TIMEOUT)).data == b"OK"
    finally:
        await client.close()


async def test_unknown_sandbox(server: StreamingServer) -> None:
    client = await sc.PortForwardClient.connect(pf_url(server, sandbox="nope"))
    try:
        result = await asyncio.wait_for(client.forward(80, b"x"), TIMEOUT)
        assert result.error == "error forwarding port 80 to pod nope, uid : sandbox 'nope' not found"
    finally:
        await client.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"streamType": "data", "requestID": "0"},
        {"streamType": "data", "port": "0", "requestID": "0"},
        {"streamType": "data", "port": "65536", "requestID": "0"},
        {"streamType": "data", "port": "eighty", "requestID": "0"},
        {"port": "80", "requestID": "0"},
        {"streamType": "stdout", "port": "80", "requestID": "0"},
    ],
)
async def test_invalid_streams_are_reset(server: StreamingServer, headers: dict[str, str]) -> None:
    client = await sc.SpdyClient.connect(pf_url(server), [c.PORTFORWARD_V1])
    try:
        with pytest.raises(StreamResetError):
            await asyncio.wait_for(client.open(headers), TIMEOUT)
    finally:
        await client.close()


async def test_half_pair_times_out(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(stream_creation_timeout=0.3) as server:
        client = await sc.SpdyClient.connect(pf_url(server), [c.PORTFORWARD_V1])
        try:
            error = await client.open({"streamType": "error", "port": "80", "requestID": "7"})
            message = await asyncio.wait_for(error.read_all(), TIMEOUT)
            assert message == b"timed out waiting for streams of request 7"
        finally:
            await client.close()


async def test_duplicate_stream_in_a_pair(server: StreamingServer) -> None:
    client = await sc.SpdyClient.connect(pf_url(server), [c.PORTFORWARD_V1])
    try:
        error = await client.open({"streamType": "error", "port": "80", "requestID": "1"})
        duplicate = await client.open({"streamType": "error", "port": "80", "requestID": "1"})
        assert await asyncio.wait_for(duplicate.read_all(), TIMEOUT) == b""
        assert duplicate.reset_status is not None
        assert await asyncio.wait_for(error.read(), TIMEOUT) == (
            b"error processing stream for request 1: error stream already assigned"
        )
    finally:
        await client.close()


async def test_old_clients_without_request_id(server: StreamingServer) -> None:
    client = await sc.SpdyClient.connect(pf_url(server), [c.PORTFORWARD_V1])
    try:
        error = await client.open({"streamType": "error", "port": "80"})  # stream 1
        data = await client.open({"streamType": "data", "port": "80"})  # stream 3: paired as 3 - 2
        await data.write(b"old")
        await data.close()
        assert await asyncio.wait_for(data.read_all(), TIMEOUT) == b"OLD"
        assert await asyncio.wait_for(error.read_all(), TIMEOUT) == b""
    finally:
        await client.close()


async def test_disconnect_cancels_forwards(server: StreamingServer, runtime: FakeStreamingRuntime) -> None:
    async def stuck(stream: DuplexStream) -> None:
        await asyncio.Event().wait()  # ignores its stream: only cancellation ends it

    runtime.add_service("pod", 99, stuck)
    client = await sc.SpdyClient.connect(pf_url(server), [c.PORTFORWARD_V1])
    await client.open({"streamType": "error", "port": "99", "requestID": "0"})
    await client.open({"streamType": "data", "port": "99", "requestID": "0"})
    await asyncio.wait_for(runtime.call(0), TIMEOUT)
    await client.close()
    await asyncio.wait_for(runtime.calls[-1].done.wait(), TIMEOUT)
    assert runtime.calls[-1].cancelled


async def test_negotiation(server: StreamingServer) -> None:
    with pytest.raises(sc.UpgradeError) as info:
        await sc.SpdyClient.connect(pf_url(server), [c.REMOTECOMMAND_V4])
    assert info.value.status_code == 403
    assert info.value.headers["x-accepted-stream-protocol-versions"] == c.PORTFORWARD_V1


# --- WebSocket channel pairs ---------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [c.REMOTECOMMAND_V4, c.BASE64_V4])
async def test_websocket_channel_pairs(server: StreamingServer, protocol: str) -> None:
    url = pf_url(server, ports=[80, 81])
    out = await asyncio.wait_for(sc.ws_portforward(url, [80, 81], {80: b"abc"}, protocol=protocol), TIMEOUT)
    assert out[80].data == b"ABC"
    assert out[80].error == ""
    assert out[81].data == b""
    assert out[81].error.startswith("error forwarding port 81 to pod pod")


async def test_websocket_ports_from_the_query(server: StreamingServer) -> None:
    url = pf_url(server) + "?port=25"
    out = await asyncio.wait_for(sc.ws_portforward(url, [25], {}), TIMEOUT)
    assert out[25].data == b"hello\n"


async def test_websocket_without_ports_is_400(server: StreamingServer) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(
                "ws://" + pf_url(server).removeprefix("http://"), protocols=[c.REMOTECOMMAND_V4]
            )
    assert info.value.status == 400


async def test_websocket_port_prefix_comes_first(server: StreamingServer) -> None:
    url = "ws://" + pf_url(server, ports=[25]).removeprefix("http://")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, protocols=[c.REMOTECOMMAND_V4]) as conn:
            first = [(await conn.receive(timeout=TIMEOUT)).data for _ in range(2)]
            assert sorted(first) == [b"\x00\x19\x00", b"\x01\x19\x00"]  # data 0 and error 1, port 25 LE
            rest = await conn.receive(timeout=TIMEOUT)
            assert rest.data == b"\x00hello\n"
    assert channels.decode_port(b"\x19\x00") == 25
