"""Pod networking (bridge, host-local, portmap, loopback) and the streaming server (exec over
WebSocket and SPDY, attach, port-forward), through the CRI of a real daemon."""

from __future__ import annotations

import asyncio
import socket

import pytest

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.streaming.runtime import TerminalSize
from arun.testing import streamclient as sc
from arun.testing.cri import CRIClient, CRIEnv
from arun.testing.registry import free_port


async def _pod_ip(cri: CRIClient, pod: str) -> str:
    return str((await cri.pod_status(pod)).status.network.ip)


async def test_two_pods_talk_over_tcp(env: CRIEnv, cri: CRIClient) -> None:
    server_pod = await cri.run_pod("tcp-server")
    client_pod = await cri.run_pod("tcp-client")
    server = await cri.create(
        server_pod, "srv", env.image("busybox"), ["sh", "-c", "echo pong-from-server | nc -l -p 7777"]
    )
    await cri.start(server)
    ip = await _pod_ip(cri, server_pod)
    assert ip and ip != await _pod_ip(cri, client_pod)
    client = await cri.create(client_pod, "cli", env.image("busybox"), ["sleep", "1000"])
    await cri.start(client)
    out = b""
    for _ in range(50):
        r = await cri.exec_sync(client, ["sh", "-c", f"nc -w 2 {ip} 7777 </dev/null"])
        out = r.stdout
        if out:
            break
        await asyncio.sleep(0.1)
    assert out == b"pong-from-server\n"
    # Loopback is up inside a pod.
    r = await cri.exec_sync(client, ["sh", "-c", "ip addr show lo | grep -c 'state UNKNOWN\\|UP'"])
    assert r.exit_code == 0
    for p in (server_pod, client_pod):
        await cri.stop_pod(p)
        await cri.remove_pod(p)


async def test_host_port_reachable_from_the_host(env: CRIEnv, cri: CRIClient) -> None:
    host_port = free_port()
    pm = api_pb2.PortMapping(protocol=api_pb2.TCP, container_port=8080, host_port=host_port)
    pod_cfg = cri.pod_config("hostport", port_mappings=[pm])
    pod = await cri.run_pod(pod_cfg)
    cid = await cri.create(
        pod,
        "web",
        env.image("busybox"),
        ["sh", "-c", "mkdir -p /www && echo hello-hostport > /www/index.html && httpd -f -p 8080 -h /www"],
    )
    await cri.start(cid)
    body = b""
    for _ in range(50):
        try:
            reader, writer = await asyncio.open_connection(env.gateway, host_port)
            writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
            await writer.drain()
            body = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            if b"hello-hostport" in body:
                break
        except OSError:
            pass
        await asyncio.sleep(0.1)
    assert b"200 OK" in body and b"hello-hostport" in body
    # Through 127.0.0.1 too (portmap's SNAT for localhost), as critest checks it.
    body = b""
    for _ in range(50):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", host_port)
            writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
            await writer.drain()
            body = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            if b"hello-hostport" in body:
                break
        except OSError:
            pass
        await asyncio.sleep(0.1)
    assert b"200 OK" in body and b"hello-hostport" in body
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)
    # The port mapping is gone with the pod.
    with pytest.raises(OSError):
        _, w = await asyncio.wait_for(asyncio.open_connection(env.gateway, host_port), 2)
        w.close()


async def _running(env: CRIEnv, cri: CRIClient, name: str, **fields: object) -> tuple[str, str]:
    pod = await cri.run_pod(name)
    cid = await cri.create(pod, "c", env.image("busybox"), ["sleep", "1000"], **fields)  # type: ignore[arg-type]
    await cri.start(cid)
    return pod, cid


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
async def test_exec_returns_output_and_exit_code(env: CRIEnv, cri: CRIClient, transport: str) -> None:
    pod, cid = await _running(env, cri, f"exec-{transport}")
    req = api_pb2.ExecRequest(
        container_id=cid, cmd=["sh", "-c", "echo out; echo err >&2; exit 5"], stdout=True, stderr=True
    )
    url = (await cri.rt.Exec(req)).url
    if transport == "websocket":
        res = await sc.ws_remotecommand(url)
    else:
        res = await sc.spdy_remotecommand(url)
    assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 5)
    # Success, with stdin.
    req = api_pb2.ExecRequest(container_id=cid, cmd=["cat"], stdin=True, stdout=True, stderr=True)
    url = (await cri.rt.Exec(req)).url
    if transport == "websocket":
        res = await sc.ws_remotecommand(url, stdin=b"piped input\n")
    else:
        res = await sc.spdy_remotecommand(url, stdin=b"piped input\n")
    assert (res.stdout, res.exit_code) == (b"piped input\n", 0)
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def test_exec_with_tty_and_resize(env: CRIEnv, cri: CRIClient) -> None:
    pod, cid = await _running(env, cri, "exec-tty")
    req = api_pb2.ExecRequest(
        container_id=cid, cmd=["sh", "-c", "sleep 0.3; stty size"], tty=True, stdout=True, stdin=True
    )
    url = (await cri.rt.Exec(req)).url
    res = await sc.spdy_remotecommand(url, stdin=b"", tty=True, resizes=[TerminalSize(120, 40)])
    assert res.exit_code == 0
    assert b"40 120" in res.stdout
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
async def test_attach(env: CRIEnv, cri: CRIClient, transport: str) -> None:
    pod = await cri.run_pod(f"attach-{transport}")
    cid = await cri.create(pod, "shell", env.image("busybox"), ["/bin/sh"], stdin=True, stdin_once=True)
    await cri.start(cid)
    url = (
        await cri.rt.Attach(api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True))
    ).url
    if transport == "spdy":
        res = await sc.spdy_remotecommand(url, stdin=b"echo -n attached-hello\n")
    else:
        res = await sc.ws_remotecommand(url, stdin=b"echo -n attached-hello\n")
    assert res.stdout == b"attached-hello"
    st = await cri.wait_state(cid, api_pb2.CONTAINER_EXITED)
    assert st.exit_code == 0
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


@pytest.mark.parametrize("websocket", [False, True])
async def test_port_forward(env: CRIEnv, cri: CRIClient, websocket: bool) -> None:
    pod = await cri.run_pod(f"pf-{websocket}")
    cid = await cri.create(
        pod, "srv", env.image("busybox"), ["sh", "-c", "while true; do echo forwarded | nc -l -p 9090; done"]
    )
    await cri.start(cid)
    url = (await cri.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod, port=[9090]))).url
    got = b""
    for _ in range(30):
        client = await sc.PortForwardClient.connect(url, websocket=websocket)
        try:
            result = await client.forward(9090, b"")
        finally:
            await client.close()
        got = result.data
        if got:
            break
        await asyncio.sleep(0.2)
    assert got == b"forwarded\n"
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def test_host_network_pod(env: CRIEnv, cri: CRIClient) -> None:
    linux = api_pb2.LinuxPodSandboxConfig(
        security_context=api_pb2.LinuxSandboxSecurityContext(
            namespace_options=api_pb2.NamespaceOption(network=api_pb2.NODE)
        )
    )
    pod = await cri.run_pod(cri.pod_config("hostnet", linux=linux))
    st = await cri.pod_status(pod)
    assert st.status.network.ip == ""
    cid = await cri.create(pod, "c", env.image("busybox"), ["sleep", "1000"])
    await cri.start(cid)
    r = await cri.exec_sync(cid, ["hostname"])
    assert r.stdout.decode().strip() == socket.gethostname()
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)
