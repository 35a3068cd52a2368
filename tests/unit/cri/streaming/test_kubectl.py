"""Real client-go: kubectl exec/attach/port-forward through a kubelet-like proxy to the streaming server.

kubectl is client-go's remotecommand and port-forward code, as critest and
crictl embed it: WebSocket ``v5.channel.k8s.io`` with SPDY fallback for exec and
attach, SPDY-over-WebSocket with SPDY fallback for port-forward. The
``KUBECTL_*_WEBSOCKETS=false`` variables force the SPDY paths.

kubectl runs with ``-v=6``: its logging between the WebSocket handshake and
the set-up of its streams widens the window of client-go's (<= 1.33) race that
drops early server output, so the test would catch a server that writes too
soon (see ``websocket_hold``).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import shutil
import socket
import struct
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from arun.cri.streaming.runtime import TerminalSize
from arun.cri.streaming.server import StreamingServer
from arun.testing.kubeproxy import KubeProxy
from arun.testing.streaming import FakeStreamingRuntime

TIMEOUT = 60

WEBSOCKET = {}
SPDY_EXEC = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
SPDY_PORT_FORWARD = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


@pytest.fixture
def kubectl_env(tmp_path: Path) -> dict[str, str]:
    if shutil.which("kubectl") is None:
        if os.environ.get("ARUN_TEST_STRICT") == "1":
            pytest.fail("kubectl (client-go) is required under ARUN_TEST_STRICT=1")
        pytest.skip("needs kubectl, the real client-go streaming client")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env.update(HOME=str(tmp_path), KUBECACHEDIR=str(tmp_path / "cache"), KUBECONFIG=str(tmp_path / "none"))
    return env


@pytest.fixture
async def proxy(server: StreamingServer) -> AsyncIterator[KubeProxy]:
    async with KubeProxy(server, pod="pod", container="ctr", sandbox="pod") as p:
        yield p


async def kubectl(
    proxy: KubeProxy, env: dict[str, str], *args: str, stdin: bytes | None = None
) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--server", proxy.url, "-v=6", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out, err


@pytest.mark.parametrize("transport", [WEBSOCKET, SPDY_EXEC], ids=["websocket", "spdy"])
async def test_kubectl_exec(proxy: KubeProxy, kubectl_env: dict[str, str], transport: dict[str, str]) -> None:
    env = {**kubectl_env, **transport}
    code, out, err = await kubectl(proxy, env, "exec", "pod", "-c", "ctr", "--", "echo", "hello")
    assert (code, out) == (0, b"hello\n"), err
    code, out, err = await kubectl(proxy, env, "exec", "pod", "-c", "ctr", "--", "to-stderr", "oops")
    assert (code, out) == (0, b"")
    assert err.endswith(b"\noops\n")  # after kubectl's own log lines
    code, out, err = await kubectl(proxy, env, "exec", "pod", "-c", "ctr", "--", "exit", "3")
    assert code == 3
    assert b"command terminated with exit code 3" in err
    data = b"line one\nline two\n" * 1000
    code, out, err = await kubectl(proxy, env, "exec", "-i", "pod", "-c", "ctr", "--", "cat", stdin=data)
    assert (code, out) == (0, data), err
    expected = ["GET", "GET", "GET", "GET"] if transport is WEBSOCKET else ["POST", "POST", "POST", "POST"]
    assert [r.split()[0] for r in proxy.requests if "/exec?" in r] == expected


@pytest.mark.parametrize("transport", [WEBSOCKET, SPDY_EXEC], ids=["websocket", "spdy"])
async def test_kubectl_attach(
    proxy: KubeProxy, kubectl_env: dict[str, str], runtime: FakeStreamingRuntime, transport: dict[str, str]
) -> None:
    env = {**kubectl_env, **transport}
    code, out, err = await kubectl(proxy, env, "attach", "-i", "pod", "-c", "ctr", stdin=b"echo hi\n")
    assert (code, out) == (0, b"hi\n"), err
    assert runtime.calls[-1].kind == "attach"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", [WEBSOCKET, SPDY_PORT_FORWARD], ids=["websocket-tunnel", "spdy"])
async def test_kubectl_port_forward(
    proxy: KubeProxy, kubectl_env: dict[str, str], transport: dict[str, str]
) -> None:
    local = _free_port()
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--server", proxy.url, "port-forward", "pod/pod", f"{local}:80",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**kubectl_env, **transport},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        assert b"Forwarding from 127.0.0.1:" in line
        for i in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"connection %d" % i)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"CONNECTION %d" % i
            writer.close()
    finally:
        proc.terminate()
        await proc.communicate()
    method = "GET" if transport is WEBSOCKET else "POST"
    assert [r.split()[0] for r in proxy.requests if r.split()[1].endswith("/portforward")] == [method]


@pytest.mark.parametrize("transport", [WEBSOCKET, SPDY_EXEC], ids=["websocket", "spdy"])
async def test_kubectl_exec_with_a_terminal(
    proxy: KubeProxy, kubectl_env: dict[str, str], runtime: FakeStreamingRuntime, transport: dict[str, str]
) -> None:
    """-it on a pseudo-terminal: tty exec with stdin, and the terminal's size arrives as a resize event."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))  # rows, cols
    try:
        proc = await asyncio.create_subprocess_exec(
            "kubectl", "--server", proxy.url, "exec", "-it", "pod", "-c", "ctr", "--", "resize", "1",
            stdin=secondary, stdout=secondary, stderr=asyncio.subprocess.PIPE,
            env={**kubectl_env, **transport},
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0, err
        output = b""
        while True:
            ready, _, _ = select.select([primary], [], [], 0.2)
            if not ready:
                break
            output += os.read(primary, 4096)
    finally:
        os.close(primary)
        os.close(secondary)
    call = runtime.calls[-1]
    assert call.tty and call.streams == (True, True, False)
    assert call.resizes == [TerminalSize(101, 33)]
    assert b"101x33" in output
