"""arun.netns against the real kernel (root): create, enter, remove, and no leftovers."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest

from arun import netns
from arun.errdefs import FailedPreconditionError, InvalidArgumentError, NotFoundError

pytestmark = pytest.mark.root


def mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def exists(path: str | Path) -> bool:
    return os.path.exists(path)


def mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def link_lo(path: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net={path}", "ip", "-o", "link", "show", "lo"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def own_netns() -> int:
    return os.stat("/proc/self/ns/net").st_ino


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "netns"


async def test_create_and_remove(base: Path) -> None:
    before = own_netns()
    ns = await netns.create(str(base))
    try:
        assert ns.name.startswith("cni-") and len(ns.name) == len("cni-") + 36
        assert os.path.dirname(ns.path) == str(base)
        assert mounted(ns.path)
        assert netns.is_netns(ns.path)
        assert not ns.closed()
        # a different namespace from ours, and we (every thread) stayed where we were
        assert os.stat(ns.path).st_ino != before
        assert own_netns() == before
        assert os.stat(f"/proc/self/task/{os.getpid()}/ns/net").st_ino == before
    finally:
        await ns.remove()
    assert not exists(ns.path)
    assert not mounted(ns.path)
    assert ns.closed()
    await ns.remove()  # idempotent
    await netns.remove(str(base / "never-existed"))


async def test_named_and_duplicate(base: Path) -> None:
    ns = await netns.create(str(base), "arun-test-named")
    try:
        with pytest.raises(FailedPreconditionError, match="already exists"):
            await netns.create(str(base), "arun-test-named")
        assert mounted(ns.path)  # the failed second create did not touch the first
    finally:
        await ns.remove()
    with pytest.raises(InvalidArgumentError):
        await netns.create(str(base), "../escape")


async def test_remove_of_unmounted_file(tmp_path: Path) -> None:
    p = tmp_path / "plain"
    p.write_text("")
    assert not netns.is_netns(str(p))
    await netns.remove(str(p))  # EINVAL from umount is fine
    assert not p.exists()


async def test_failed_mount_leaves_nothing(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(source: str, target: str) -> None:
        raise OSError(1, "bind mount: refused by test", target)

    monkeypatch.setattr(netns, "_bind_mount", refuse)
    with pytest.raises(OSError, match="refused by test"):
        await netns.create(str(base))
    assert os.listdir(base) == []


async def test_cancelled_create_leaves_nothing(base: Path) -> None:
    task = asyncio.create_task(netns.create(str(base)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not exists(base) or os.listdir(base) == []
    assert str(base) not in mountinfo()


async def test_run_in_netns_and_loopback(base: Path) -> None:
    before = os.stat("/proc/thread-self/ns/net").st_ino
    ns = await netns.create(str(base))
    try:
        assert "<LOOPBACK>" in link_lo(ns.path)  # down in a fresh namespace
        netns.set_loopback_up(ns.path)
        assert "<LOOPBACK,UP,LOWER_UP>" in link_lo(ns.path)
        # a socket made inside stays inside: a server there, a client there, nothing on the host
        server = ns.run(lambda: socket.create_server(("127.0.0.1", 0)))
        port = server.getsockname()[1]
        try:
            client = ns.run(lambda: socket.create_connection(("127.0.0.1", port), timeout=5))
            conn, _ = server.accept()
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.close()
            client.close()
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        finally:
            server.close()
        # the calling thread never left its namespace
        assert os.stat("/proc/thread-self/ns/net").st_ino == before
    finally:
        await ns.remove()
    with pytest.raises(NotFoundError):
        netns.run_in_netns(ns.path, lambda: None)
