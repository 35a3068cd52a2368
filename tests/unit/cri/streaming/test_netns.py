"""The port-forward helper against a real network namespace (needs root and iproute2)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from arun import errdefs
from arun.cri.streaming import netns

pytestmark = pytest.mark.root

TIMEOUT = 20

# Runs inside the namespace: listens on loopback, prints its port, then for each
# connection answers "<netns inode> " + what it read until EOF, and closes.
SERVER = r"""
import os, socket, sys
ino = os.stat("/proc/self/ns/net").st_ino
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(8)
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    conn.sendall(str(ino).encode() + b" " + data)
    conn.close()
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    if shutil.which("ip") is None:
        pytest.fail("iproute2's ip is required for the netns tests")
    name = f"arun-test-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def ns_server(namespace: str) -> Iterator[int]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield port
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class Pipe:
    """A DuplexStream fed from a bytes payload, collecting what is written."""

    def __init__(self, payload: bytes) -> None:
        self.incoming = [payload] if payload else []
        self.written = b""
        self.closed = False

    async def read(self, n: int = 65536) -> bytes:
        return self.incoming.pop(0) if self.incoming else b""

    async def write(self, data: bytes) -> None:
        self.written += data

    async def close(self) -> None:
        self.closed = True


def netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


@pytest.fixture
async def threads_unchanged() -> AsyncIterator[None]:
    """The loop's thread and the default executor's threads stay in the host namespace."""
    before = os.stat("/proc/thread-self/ns/net").st_ino
    yield
    assert os.stat("/proc/thread-self/ns/net").st_ino == before
    seen = await asyncio.gather(
        *(asyncio.to_thread(lambda: os.stat("/proc/thread-self/ns/net").st_ino) for _ in range(8))
    )
    assert set(seen) == {before}


async def test_forward_reaches_the_server_in_the_namespace(
    namespace: str, ns_server: int, threads_unchanged: None
) -> None:
    pipe = Pipe(b"ping")
    await asyncio.wait_for(netns.port_forward(f"/run/netns/{namespace}", ns_server, pipe), TIMEOUT)
    assert pipe.written == f"{netns_inode(namespace)} ping".encode()
    assert pipe.closed  # the server's EOF closed the stream toward the client
    assert netns_inode(namespace) != os.stat("/proc/self/ns/net").st_ino


async def test_socket_is_created_in_the_namespace(namespace: str, threads_unchanged: None) -> None:
    """A listening socket made by the helper is reachable from a process inside the namespace."""
    sock = await netns.socket_in_netns(f"/run/netns/{namespace}")
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        client = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", namespace, sys.executable, "-c",
            f"import socket; socket.create_connection(('127.0.0.1', {port})).sendall(b'inside')",
        )  # fmt: skip
        conn, _ = await asyncio.wait_for(loop.sock_accept(sock), TIMEOUT)
        with conn:
            assert await loop.sock_recv(conn, 16) == b"inside"
        assert await client.wait() == 0
    finally:
        sock.close()


async def test_nothing_listening(namespace: str) -> None:
    with pytest.raises(ConnectionRefusedError) as info:
        await asyncio.wait_for(netns.port_forward(f"/run/netns/{namespace}", 9, Pipe(b"")), TIMEOUT)
    assert "inside namespace" in str(info.value)


async def test_missing_namespace() -> None:
    with pytest.raises(errdefs.NotFoundError):
        await netns.port_forward("/run/netns/arun-does-not-exist", 80, Pipe(b""))


async def test_invalid_port() -> None:
    with pytest.raises(errdefs.InvalidArgumentError):
        await netns.port_forward(None, 0, Pipe(b""))
