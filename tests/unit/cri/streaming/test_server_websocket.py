"""exec and attach over WebSocket (channel.k8s.io family) against the real server on loopback."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.streaming import channels
from arun.cri.streaming import constants as c
from arun.cri.streaming.runtime import TerminalSize
from arun.cri.streaming.server import StreamingServer
from arun.testing import streamclient as sc
from arun.testing.streaming import FakeStreamingRuntime

TIMEOUT = 20


def exec_url(server: StreamingServer, cmd: list[str], **flags: bool) -> str:
    flags = {"stdout": True, "stderr": True, **flags}
    if flags.get("tty"):
        flags["stderr"] = False
    return server.get_exec(api_pb2.ExecRequest(container_id="ctr", cmd=cmd, **flags)).url


def ws(url: str) -> str:
    return "ws://" + url.removeprefix("http://")


async def run(url: str, **kwargs: object) -> sc.CommandResult:
    return await asyncio.wait_for(sc.ws_remotecommand(url, **kwargs), TIMEOUT)  # type: ignore[arg-type]


async def test_v5_exec_like_client_go(server: StreamingServer) -> None:
    """crictl/critest with --websocket-exec: client-go offers only v5.channel.k8s.io."""
    result = await run(exec_url(server, ["echo", "hello"]))
    assert result.protocol == c.REMOTECOMMAND_V5
    assert result.stdout == b"hello\n"
    assert result.stderr == b""
    assert result.exit_code == 0


async def test_v5_exit_code(server: StreamingServer) -> None:
    result = await run(exec_url(server, ["exit", "42"]))
    assert result.exit_code == 42


async def test_v5_close_signal_ends_stdin(server: StreamingServer) -> None:
    data = b"x" * 300_000
    result = await run(exec_url(server, ["cat"], stdin=True), stdin=data)
    assert result.stdout == data
    assert result.exit_code == 0


async def test_v4_and_base64(server: StreamingServer) -> None:
    result = await run(exec_url(server, ["exit", "7"]), protocols=[c.REMOTECOMMAND_V4])
    assert (result.protocol, result.exit_code) == (c.REMOTECOMMAND_V4, 7)
    result = await run(exec_url(server, ["to-stderr", "b64"]), protocols=[c.BASE64_V4])
    assert (result.protocol, result.stderr, result.exit_code) == (c.BASE64_V4, b"b64\n", 0)


@pytest.mark.parametrize("protocol", [c.REMOTECOMMAND_V1, c.BASE64_V1])
async def test_pre_v4_status_is_failure_text(server: StreamingServer, protocol: str) -> None:
    result = await run(exec_url(server, ["exit", "7"]), protocols=[protocol])
    assert result.protocol == protocol
    assert result.raw_error_stream == (
        b"command terminated with non-zero exit code: error executing command [exit 7], exit code 7"
    )
    result = await run(exec_url(server, ["echo", "ok"]), protocols=[protocol])
    assert result.raw_error_stream == b"" and result.stdout == b"ok\n"


async def test_no_subprotocol_means_binary_channels(server: StreamingServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws(exec_url(server, ["echo", "plain"]))) as conn:
            assert conn.protocol is None
            messages = [m.data async for m in conn if m.type == aiohttp.WSMsgType.BINARY]
    assert messages == [b"\x01", b"\x01plain\n"]  # the ready message, then stdout; success writes nothing


async def test_ready_message_goes_to_the_lowest_writable_channel(server: StreamingServer) -> None:
    async def first(url: str) -> bytes:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(ws(url), protocols=[c.REMOTECOMMAND_V4]) as conn:
                msg = await conn.receive(timeout=TIMEOUT)
                await conn.close()
                assert isinstance(msg.data, bytes)
                return msg.data

    assert await first(exec_url(server, ["sleep", "0.2"])) == b"\x01"
    assert await first(exec_url(server, ["sleep", "0.2"], stdout=False)) == b"\x02"
    url = server.get_exec(api_pb2.ExecRequest(container_id="ctr", cmd=["sleep", "0.2"], stdin=True)).url
    assert await first(url) == b"\x03"


async def test_unsupported_subprotocol_is_refused(server: StreamingServer) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(ws(exec_url(server, ["echo"])), protocols=[c.REMOTECOMMAND_V3])
    assert info.value.status == 403


async def test_resize_over_websocket(server: StreamingServer, runtime: FakeStreamingRuntime) -> None:
    url = exec_url(server, ["resize", "1"], tty=True, stdin=True)
    result = await run(url, stdin=b"", tty=True, resizes=[TerminalSize(120, 40)])
    assert result.stdout == b"120x40\n"
    assert runtime.calls[-1].resizes == [TerminalSize(120, 40)]


async def test_attach_over_websocket(server: StreamingServer) -> None:
    url = server.get_attach(
        api_pb2.AttachRequest(container_id="ctr", stdin=True, stdout=True, stderr=True)
    ).url
    result = await run(url, stdin=b"echo hello\n")
    assert result.stdout == b"hello\n"
    assert result.exit_code == 0


async def test_base64_input_and_output(server: StreamingServer) -> None:
    """v4.base64: text messages both ways; without a close signal stdin ends only with the connection."""
    url = exec_url(server, ["cat"], stdin=True)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws(url), protocols=[c.BASE64_V4]) as conn:
            assert conn.protocol == c.BASE64_V4
            await conn.send_str(
                channels.encode(channels.REMOTECOMMAND_PROTOCOLS[c.BASE64_V4], 0, b"\x00\xffbin")
            )
            got = b""
            while got != b"\x00\xffbin":
                msg = await conn.receive(timeout=TIMEOUT)
                assert msg.type == aiohttp.WSMsgType.TEXT
                decoded = channels.decode(channels.REMOTECOMMAND_PROTOCOLS[c.BASE64_V4], msg.data)
                assert isinstance(decoded, channels.ChannelData)
                if decoded.channel == channels.STDOUT:
                    got += decoded.data


async def test_websocket_disconnect_cancels(server: StreamingServer, runtime: FakeStreamingRuntime) -> None:
    async with aiohttp.ClientSession() as http:
        conn = await http.ws_connect(ws(exec_url(server, ["sleep", "60"])), protocols=[c.REMOTECOMMAND_V5])
        await conn.receive(timeout=TIMEOUT)  # ready
        await conn.close()
    await asyncio.wait_for(runtime.calls[-1].done.wait(), TIMEOUT)
    assert runtime.calls[-1].cancelled


async def test_websocket_idle_timeout(make_server, runtime: FakeStreamingRuntime) -> None:  # type: ignore[no-untyped-def]
    async with make_server(idle_timeout=0.3) as server:
        async with aiohttp.ClientSession() as http:
            conn = await http.ws_connect(
                ws(exec_url(server, ["sleep", "60"])), protocols=[c.REMOTECOMMAND_V5]
            )
            kinds = []
            async for msg in conn:
                kinds.append(msg.type)
            assert conn.closed
        await asyncio.wait_for(runtime.calls[-1].done.wait(), TIMEOUT)
        assert runtime.calls[-1].cancelled


async def test_channel_writes_from_client_to_output_channels_are_ignored(server: StreamingServer) -> None:
    """A client writing on stdout/error channels, or on a channel that does not exist, changes nothing."""
    url = exec_url(server, ["cat"], stdin=True)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws(url), protocols=[c.REMOTECOMMAND_V5]) as conn:
            await conn.send_bytes(b"\x01junk")
            await conn.send_bytes(b"\x09junk")
            await conn.send_bytes(b"\x00real")
            await conn.send_bytes(channels.encode_close(channels.STDIN))
            data = b""
            error = b""
            async for msg in conn:
                assert msg.type == aiohttp.WSMsgType.BINARY
                if msg.data[:1] == b"\x01":
                    data += msg.data[1:]
                elif msg.data[:1] == b"\x03":
                    error += msg.data[1:]
    assert data == b"real"
    assert json.loads(error)["status"] == "Success"
