"""The zygote forks arun shims that are indistinguishable from ones the ``start`` binary launches."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from arun.runtime import binary
from arun.runtime.binary import ShimEnv
from arun.runtime.bundle import Bundle
from arun.runtime.manager import ShimManager
from arun.runtime.shim import ShimConnection
from arun.runtime.zygote import Zygote, ZygoteError


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="zy", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_bundle(base: Path, id: str, **annotations: str) -> Bundle:
    path = base / "state" / "ns" / id
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"annotations": annotations}))
    os.mkfifo(path / "log")
    return Bundle(id, "ns", path, base / "root" / "ns" / id)


def env_for(base: Path) -> ShimEnv:
    return ShimEnv(
        grpc_address=str(base / "arun.sock"),
        ttrpc_address=str(base / "arun.sock.ttrpc"),
        socket_dir=str(base / "s"),
    )


@pytest.fixture
async def zygote(base: Path) -> AsyncIterator[Zygote]:
    z = Zygote(env=env_for(base).environment(""))
    await z.start()
    yield z
    await z.close()


async def _shutdown(address: str) -> None:
    conn = await ShimConnection.connect(binary.BootstrapResult(3, address), "ns", lambda: None)
    try:
        await conn.call("Shutdown", conn.request("Shutdown", id="x"))
    finally:
        await conn.close()


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


async def _gone(pid: int) -> bool:
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_zygote_matches_the_start_binary(base: Path, zygote: Zygote) -> None:
    env = env_for(base)
    a = make_bundle(base, "a")
    b = make_bundle(base, "b")
    logs = [os.open(x.path / "log", os.O_RDWR | os.O_NONBLOCK) for x in (a, b)]
    try:
        argv = [*env.flags("ns", "a"), "start"]
        stdin = binary.bootstrap_params(env, "ns", "a", None).SerializeToString()
        out, pid = await zygote.spawn(argv, stdin, env.environment("ns"), str(a.path))
        by_zygote = binary.parse_start_output(out)
        by_binary = await binary.start(binary.builtin_shim(), env, b.path, "ns", "b", None)
        try:
            assert by_zygote.version == by_binary.version == 3
            # Same socket rule: <socket dir>/<sha256(grpc/ns/group)>.
            assert os.path.dirname(by_zygote.address) == os.path.dirname(by_binary.address)
            assert sorted(p.name for p in a.path.iterdir()) == sorted(p.name for p in b.path.iterdir())
            assert (a.path / "shim.pid").read_text() == str(pid)
            assert (a.path / "address").read_text() == by_zygote.address
            assert os.readlink(a.path / "s") == env.socket_dir
            # Detached: not a child of the zygote (nor of us), its own session.
            assert pid != zygote.pid and _ppid(pid) not in (zygote.pid, os.getpid())
            assert os.getsid(pid) == pid
            conn = await ShimConnection.connect(by_zygote, "ns", lambda: None)
            try:
                resp = await conn.call("Connect", conn.request("Connect", id="a"))
                assert resp.shim_pid == pid
            finally:
                await conn.close()
        finally:
            await _shutdown(by_zygote.address)
            await _shutdown(by_binary.address)
        assert await _gone(pid)
    finally:
        for fd in logs:
            os.close(fd)


async def test_zygote_reuses_the_pod_shim(base: Path, zygote: Zygote) -> None:
    env = env_for(base)
    pod = {"io.kubernetes.cri.sandbox-id": "pod1"}
    first = make_bundle(base, "pause", **pod)
    second = make_bundle(base, "app", **pod)
    log_fd = os.open(first.path / "log", os.O_RDWR | os.O_NONBLOCK)
    try:
        results = []
        for bnd in (first, second):
            argv = [*env.flags("ns", bnd.id), "start"]
            stdin = binary.bootstrap_params(env, "ns", bnd.id, None).SerializeToString()
            results.append(await zygote.spawn(argv, stdin, env.environment("ns"), str(bnd.path)))
        (out1, pid1), (out2, pid2) = results
        assert pid1 > 0 and pid2 == 0
        assert binary.parse_start_output(out1) == binary.parse_start_output(out2)
        await _shutdown(binary.parse_start_output(out1).address)
        assert await _gone(pid1)
    finally:
        os.close(log_fd)


async def test_zygote_errors_are_reported(base: Path, zygote: Zygote) -> None:
    env = env_for(base)
    with pytest.raises(ZygoteError, match="namespace"):
        await zygote.spawn(["start"], b"", env.environment(""), str(base))
    # Still serving after a failed request.
    assert zygote.ready


async def test_manager_falls_back_to_the_binary(base: Path) -> None:
    env = env_for(base)
    shims = ShimManager(env)
    shims.start_zygote()
    assert await shims.wait_zygote()
    assert shims.zygote is not None
    os.kill(shims.zygote.pid, signal.SIGKILL)
    bnd = make_bundle(base, "c")
    log_fd = os.open(bnd.path / "log", os.O_RDWR | os.O_NONBLOCK)
    try:
        result = await shims.start(binary.builtin_shim(), bnd, None)
        assert shims.started == {"zygote": 0, "binary": 1}
        assert not shims.zygote.ready
        pid = int((bnd.path / "shim.pid").read_text())
        await _shutdown(result.address)
        assert await _gone(pid)
    finally:
        os.close(log_fd)
        await shims.close()


async def test_zygote_exits_with_the_daemon_end(base: Path) -> None:
    z = Zygote(env=env_for(base).environment(""))
    await z.start()
    pid = z.pid
    await z.close()
    assert await _gone(pid)
    with pytest.raises(ZygoteError):
        await z.spawn(["start"], b"", {}, str(base))
