"""exec and attach over SPDY against the real server on loopback, driven like client-go drives it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from arun import errdefs
from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.streaming import constants as c
from arun.cri.streaming import spdy
from arun.cri.streaming.runtime import TerminalSize
from arun.cri.streaming.server import StreamingConfig, StreamingServer
from arun.testing import streamclient as sc
from arun.testing.streaming import FakeStreamingRuntime

TIMEOUT = 20


def exec_url(server: StreamingServer, cmd: list[str], **flags: bool) -> str:
    flags = {"stdout": True, "stderr": True, **flags}
    if flags.get("tty"):
        flags["stderr"] = False
    return server.get_exec(api_pb2.ExecRequest(container_id="ctr", cmd=cmd, **flags)).url


async def never_ending() -> AsyncIterator[bytes]:
    """A local stdin that never produces anything nor ends (critest's pipe)."""
    await asyncio.Event().wait()
    yield b""  # pragma: no cover


async def run(url: str, **kwargs: object) -> sc.CommandResult:
    return await asyncio.wait_for(sc.spdy_remotecommand(url, **kwargs), TIMEOUT)  # type: ignore[arg-type]


async def test_url_shape(server: StreamingServer) -> None:
    url = exec_url(server, ["echo"])
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/exec/[A-Za-z0-9_-]{8}", url)
    assert server.url == url.rsplit("/", 2)[0]
    url = server.get_attach(api_pb2.AttachRequest(container_id="ctr", stdout=True)).url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/attach/[A-Za-z0-9_-]{8}", url)
    url = server.get_port_forward(api_pb2.PortForwardRequest(pod_sandbox_id="pod")).url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/portforward/[A-Za-z0-9_-]{8}", url)


async def test_exec_tty_false_stdin_false(server: StreamingServer, runtime: FakeStreamingRuntime) -> None:
    """critest: 'runtime should support exec with tty=false and stdin=false'."""
    result = await run(exec_url(server, ["echo", "hello"]))
    assert result.protocol == c.REMOTECOMMAND_V4
    assert result.stdout == b"hello\n"
    assert result.stderr == b""
    assert result.exit_code == 0 and result.error is None
    assert result.raw_error_stream == b'{"metadata":{},"status":"Success"}'
    call = runtime.calls[-1]
    assert (call.kind, call.target, call.cmd, call.tty) == ("exec", "ctr", ("echo", "hello"), False)
    assert call.streams == (False, True, True)


async def test_exec_tty_true_stdin_true(server: StreamingServer, runtime: FakeStreamingRuntime) -> None:
    """critest: 'runtime should support exec with tty=true and stdin=true' — stdin stays open and silent."""
    url = exec_url(server, ["echo", "hello"], tty=True, stdin=True)
    result = await run(url, stdin=never_ending(), tty=True)
    assert b"hello" in result.stdout
    assert result.exit_code == 0
    assert runtime.calls[-1].streams == (True, True, False)
    assert runtime.calls[-1].tty


async def test_non_zero_exit_code(server: StreamingServer) -> None:
    result = await run(exec_url(server, ["exit", "3"]))
    assert result.exit_code == 3
    assert result.error is None


async def test_stderr_is_separate(server: StreamingServer) -> None:
    result = await run(exec_url(server, ["to-stderr", "oops"]))
    assert result.stdout == b""
    assert result.stderr == b"oops\n"


async def test_stdin_round_trip_with_half_close(server: StreamingServer) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: more than the session buffers
    result = await run(exec_url(server, ["cat"], stdin=True), stdin=data)
    assert result.stdout == data
    assert result.exit_code == 0


async def test_large_output(server: StreamingServer) -> None:
    result = await run(exec_url(server, ["bulk", str(5 << 20)]))
    assert len(result.stdout) == 5 << 20
    assert result.stdout[:512] == bytes(range(256)) * 2
    assert result.exit_code == 0


@pytest.mark.parametrize("protocol", [c.REMOTECOMMAND_V4, c.REMOTECOMMAND_V3])
async def test_resize_events(server: StreamingServer, runtime: FakeStreamingRuntime, protocol: str) -> None:
    url = exec_url(server, ["resize", "2"], tty=True, stdin=True)
    result = await run(
        url,
        stdin=never_ending(),
        tty=True,
        resizes=[TerminalSize(80, 24), TerminalSize(132, 43)],
        protocols=[protocol],
    )
    assert result.protocol == protocol
    assert result.stdout == b"80x24\n132x43\n"
    assert runtime.calls[-1].resizes == [TerminalSize(80, 24), TerminalSize(132, 43)]


async def test_v2_has_no_resize_stream(server: StreamingServer, runtime: FakeStreamingRuntime) -> None:
    url = exec_url(server, ["resize", "2"], tty=True, stdin=True)
    result = await run(url, stdin=b"", tty=True, resizes=[TerminalSize(1, 1)], protocols=[c.REMOTECOMMAND_V2])
    assert result.protocol == c.REMOTECOMMAND_V2
    assert result.exit_code == 0 and result.stdout == b""
    assert runtime.calls[-1].resizes == []


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (list(sc.CLIENT_GO_SPDY_PROTOCOLS), c.REMOTECOMMAND_V4),
        ([c.REMOTECOMMAND_V3, c.REMOTECOMMAND_V4], c.REMOTECOMMAND_V3),
        ([c.REMOTECOMMAND_V2], c.REMOTECOMMAND_V2),
        (["bogus", c.REMOTECOMMAND_V1], c.REMOTECOMMAND_V1),
        (["v5.channel.k8s.io, v2.channel.k8s.io"], c.REMOTECOMMAND_V2),  # comma-separated in one header
    ],
)
async def test_protocol_negotiation(server: StreamingServer, offered: list[str], chosen: str) -> None:
    result = await run(exec_url(server, ["echo", "x"]), protocols=offered)
    assert result.protocol == chosen
    assert result.stdout == b"x\n"


@pytest.mark.parametrize("protocol", [c.REMOTECOMMAND_V2, c.REMOTECOMMAND_V3])
async def test_pre_v4_failure_is_text(server: StreamingServer, protocol: str) -> None:
    result = await run(exec_url(server, ["exit", "5"]), protocols=[protocol])
    assert result.exit_code is None
    assert result.raw_error_stream == (
        b"command terminated with non-zero exit code: error executing command [exit 5], exit code 5"
    )
    ok = await run(exec_url(server, ["exit", "0"]), protocols=[protocol])
    assert ok.raw_error_stream == b"" and ok.exit_code == 0


async def test_v1_resets_the_error_stream_at_once(server: StreamingServer) -> None:
    """1.0-era kubelets reset the error stream right after setup; v1 clients never see an exit status."""
    result = await run(exec_url(server, ["exit", "5"]), protocols=[c.REMOTECOMMAND_V1])
    assert result.protocol == c.REMOTECOMMAND_V1
    assert result.exit_code == 0 and result.raw_error_stream == b""


async def test_runtime_error_is_an_internal_error_status(server: StreamingServer) -> None:
    url = server.get_exec(api_pb2.ExecRequest(container_id="missing", cmd=["echo"], stdout=True)).url
    result = await run(url, stderr=False)
    assert result.exit_code is None
    assert (
        result.error
        == "Internal error occurred: error executing command in container: container 'missing' not found"
    )
    assert b'"reason":"InternalError"' in result.raw_error_stream
    assert b'"code":500' in result.raw_error_stream


async def test_attach(server: StreamingServer, runtime: FakeStreamingRuntime) -> None:
    """critest's attach: a shell on stdin; 'echo hello' prints hello; closing stdin ends the attach."""
    url = server.get_attach(
        api_pb2.AttachRequest(container_id="ctr", stdin=True, stdout=True, stderr=True)
    ).url
    result = await run(url, stdin=b"echo hello\n")
    assert result.stdout == b"hello\n"
    assert result.stderr == b""
    assert result.exit_code == 0
    call = runtime.calls[-1]
    assert (call.kind, call.target, call.streams) == ("attach", "ctr", (True, True, True))


async def test_attach_error(server: StreamingServer) -> None:
    url = server.get_attach(api_pb2.AttachRequest(container_id="missing", stdout=True)).url
    result = await run(url, stderr=False)
    assert (
        result.error == "Internal error occurred: error attaching to container: container 'missing' not found"
    )


async def test_get_works_as_well_as_post(server: StreamingServer) -> None:
    result = await run(exec_url(server, ["echo", "get"]), method="GET")
    assert result.stdout == b"get\n"


# --- handshake failures -------------------------------------------------------------------------------
async def test_tokens_are_single_use(server: StreamingServer) -> None:
    url = exec_url(server, ["echo", "once"])
    assert (await run(url)).stdout == b"once\n"
    with pytest.raises(sc.UpgradeError) as info:
        await run(url)
    assert info.value.status_code == 404
    assert info.value.body == b"404 page not found\n"


async def test_unknown_token_and_wrong_endpoint(server: StreamingServer) -> None:
    with pytest.raises(sc.UpgradeError) as info:
        await run(server.url + "/exec/AAAAAAAA")
    assert info.value.status_code == 404
    token = exec_url(server, ["echo"]).rsplit("/", 1)[1]
    with pytest.raises(sc.UpgradeError) as info:
        await run(f"{server.url}/attach/{token}")  # an exec token is not an attach token
    assert info.value.status_code == 404


async def test_expired_token(runtime: FakeStreamingRuntime) -> None:
    now = [0.0]
    server = StreamingServer(runtime, StreamingConfig(token_ttl=60), clock=lambda: now[0])
    async with server:
        url = exec_url(server, ["echo"])
        now[0] += 61
        with pytest.raises(sc.UpgradeError) as info:
            await run(url)
        assert info.value.status_code == 404


async def test_no_common_protocol_is_403(server: StreamingServer) -> None:
    with pytest.raises(sc.UpgradeError) as info:
        await run(exec_url(server, ["echo"]), protocols=["v9.channel.k8s.io"])
    assert info.value.status_code == 403
    assert b"unable to negotiate protocol" in info.value.body
    assert info.value.headers["x-accepted-stream-protocol-versions"] == c.REMOTECOMMAND_V4


async def test_missing_protocol_header_is_400(server: StreamingServer) -> None:
    with pytest.raises(sc.UpgradeError) as info:
        await run(exec_url(server, ["echo"]), protocols=[])
    assert info.value.status_code == 400
    assert b"X-Stream-Protocol-Version does not exist" in info.value.body


async def test_missing_upgrade_headers_is_400(server: StreamingServer) -> None:
    url = exec_url(server, ["echo"])
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    path = url.split(server.url, 1)[1]
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        f"X-Stream-Protocol-Version: {c.REMOTECOMMAND_V4}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 400")
    writer.close()


async def test_the_101_response_and_server_silence(server: StreamingServer) -> None:
    """Exactly the upgrade headers; then silence until the client speaks (Go reads the 101 via a buffer)."""
    url = exec_url(server, ["echo"])
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    path = url.split(server.url, 1)[1]
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        "X-Stream-Protocol-Version: v5.channel.k8s.io\r\n"
        "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n".encode()
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)).decode()
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
    assert headers["connection"].lower() == "upgrade"
    assert headers["upgrade"] == "SPDY/3.1"
    assert headers["x-stream-protocol-version"] == c.REMOTECOMMAND_V4
    assert "transfer-encoding" not in headers
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)
    writer.close()


# --- request validation ------------------------------------------------------------------------------------
async def test_request_validation(server: StreamingServer) -> None:
    bad_exec = [
        api_pb2.ExecRequest(cmd=["x"], stdout=True),
        api_pb2.ExecRequest(container_id="c", cmd=["x"], tty=True, stderr=True),
        api_pb2.ExecRequest(container_id="c", cmd=["x"]),
    ]
    for req in bad_exec:
        with pytest.raises(errdefs.InvalidArgumentError):
            server.get_exec(req)
    with pytest.raises(errdefs.InvalidArgumentError):
        server.get_attach(api_pb2.AttachRequest(container_id="c"))
    with pytest.raises(errdefs.InvalidArgumentError):
        server.get_attach(api_pb2.AttachRequest(stdout=True))
    with pytest.raises(errdefs.InvalidArgumentError):
        server.get_port_forward(api_pb2.PortForwardRequest())
    with pytest.raises(errdefs.InvalidArgumentError):
        server.get_port_forward(api_pb2.PortForwardRequest(pod_sandbox_id="p", port=[0]))
    with pytest.raises(errdefs.InvalidArgumentError):
        server.get_port_forward(api_pb2.PortForwardRequest(pod_sandbox_id="p", port=[65536]))


async def test_not_started_and_in_flight_limit(runtime: FakeStreamingRuntime) -> None:
    server = StreamingServer(runtime, StreamingConfig(max_in_flight=2))
    with pytest.raises(errdefs.FailedPreconditionError):
        exec_url(server, ["echo"])
    async with server:
        exec_url(server, ["echo"])
        exec_url(server, ["echo"])
        with pytest.raises(errdefs.ResourceExhaustedError):
            exec_url(server, ["echo"])
    with pytest.raises(errdefs.InvalidArgumentError):
        StreamingConfig(port=70000)


async def test_stored_request_is_a_copy(server: StreamingServer) -> None:
    req = api_pb2.ExecRequest(container_id="ctr", cmd=["echo", "original"], stdout=True)
    url = server.get_exec(req).url
    req.cmd[1] = "changed"
    assert (await run(url, stderr=False)).stdout == b"original\n"


# --- timeouts, disconnects, shutdown ---------------------------------------------------------------------
async def test_stream_creation_timeout(make_server, runtime: FakeStreamingRuntime) -> None:  # type: ignore[no-untyped-def]
    async with make_server(stream_creation_timeout=0.3) as server:
        client = await sc.SpdyClient.connect(exec_url(server, ["echo"]), [c.REMOTECOMMAND_V4])
        try:
            await client.open({"streamType": "error"})  # stdout and stderr never come
            await asyncio.wait_for(client.session.wait_closed(), TIMEOUT)
        finally:
            await client.close()
    assert runtime.calls == []


async def test_extra_streams_are_refused(server: StreamingServer, runtime: FakeStreamingRuntime) -> None:
    client = await sc.SpdyClient.connect(
        exec_url(server, ["sleep", "30"], stderr=False), [c.REMOTECOMMAND_V4]
    )
    try:
        await client.open({"streamType": "error"})
        await client.open({"streamType": "stdout"})
        with pytest.raises(ConnectionResetError):
            await client.open({"streamType": "stderr"})
    finally:
        await client.close()


async def test_client_disconnect_cancels_the_exec(
    server: StreamingServer, runtime: FakeStreamingRuntime
) -> None:
    client = await sc.SpdyClient.connect(exec_url(server, ["sleep", "60"]), [c.REMOTECOMMAND_V4])
    for kind in ("error", "stdout", "stderr"):
        await client.open({"streamType": kind})
    await asyncio.wait_for(runtime.call(0), TIMEOUT)
    await client.close()
    await asyncio.wait_for(runtime.calls[-1].done.wait(), TIMEOUT)
    assert runtime.calls[-1].cancelled


async def test_idle_timeout_closes_and_cancels(make_server, runtime: FakeStreamingRuntime) -> None:  # type: ignore[no-untyped-def]
    async with make_server(idle_timeout=0.3) as server:
        client = await sc.SpdyClient.connect(exec_url(server, ["sleep", "60"]), [c.REMOTECOMMAND_V4])
        try:
            streams = [await client.open({"streamType": k}) for k in ("error", "stdout", "stderr")]
            await asyncio.wait_for(client.session.wait_closed(), TIMEOUT)
            assert all(s.reset_status == spdy.RstStatus.CANCEL for s in streams)
        finally:
            await client.close()
        await asyncio.wait_for(runtime.calls[-1].done.wait(), TIMEOUT)
        assert runtime.calls[-1].cancelled


async def test_stop_ends_open_sessions(runtime: FakeStreamingRuntime) -> None:
    server = StreamingServer(runtime)
    await server.start()
    client = await sc.SpdyClient.connect(exec_url(server, ["sleep", "60"]), [c.REMOTECOMMAND_V4])
    try:
        for kind in ("error", "stdout", "stderr"):
            await client.open({"streamType": kind})
        await asyncio.wait_for(runtime.call(0), TIMEOUT)
        await asyncio.wait_for(server.stop(), TIMEOUT)
        await asyncio.wait_for(client.session.wait_closed(), TIMEOUT)
        assert runtime.calls[-1].cancelled
        with pytest.raises(errdefs.FailedPreconditionError):
            server.url  # noqa: B018
    finally:
        await client.close()


async def test_many_concurrent_execs(server: StreamingServer) -> None:
    urls = [exec_url(server, ["echo", str(i)]) for i in range(20)]
    results = await asyncio.gather(*(run(u) for u in urls))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(20)]
