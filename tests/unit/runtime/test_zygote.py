"""The zygote forks arun shims that are indistinguishable from ones the ``start`` binary launches."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from arun.runtime import binary, ksm
from arun.runtime import zygote as zygote_mod
from arun.runtime.binary import ShimEnv
from arun.runtime.bundle import Bundle
from arun.runtime.manager import ShimManager
from arun.runtime.shim import ShimConnection
from arun.runtime.zygote import Zygote, ZygoteError, python_flags


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


def spawn_args(env: ShimEnv, b: Bundle) -> dict[str, Any]:
    return {
        "namespace": b.namespace,
        "id": b.id,
        "bundle": str(b.path),
        "grpc_address": env.grpc_address,
        "ttrpc_address": env.ttrpc_address,
        "socket_dir": env.socket_dir,
    }


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


async def _answers_connect(result: binary.BootstrapResult, id: str, pid: int) -> None:
    """The shim at ``result`` answers ``Connect`` for task ``id``, as process ``pid``."""
    conn = await ShimConnection.connect(result, "ns", lambda: None)
    try:
        resp = await conn.call("Connect", conn.request("Connect", id=id))
        assert resp.shim_pid == pid
    finally:
        await conn.close()


async def _serves_then_stops(out: bytes, id: str, pid: int) -> None:
    """The shim ``spawn`` reported (``out``, ``pid``) answers ``Connect``, then shuts down."""
    result = binary.parse_start_output(out)
    await _answers_connect(result, id, pid)
    await _shutdown(result.address)
    assert await _gone(pid)


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _gone(pid: int) -> bool:
    for _ in range(300):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.01)
    return False


def test_zygote_python_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zygote_mod, "_optimized_code_loads_as_well", lambda env: True)
    assert python_flags({}) == ["-OO"]
    monkeypatch.setattr(zygote_mod, "_optimized_code_loads_as_well", lambda env: False)
    assert python_flags({}) == []  # compiling in memory at every start would cost more
    assert python_flags({"ARUN_ZYGOTE_OPTIMIZE": "2"}) == ["-OO"]
    assert python_flags({"ARUN_ZYGOTE_OPTIMIZE": "1"}) == ["-O"]
    assert python_flags({"ARUN_ZYGOTE_OPTIMIZE": "0"}) == []


def test_optimized_code_only_where_it_loads_from_a_cache_as_well(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opt = ".opt-2.pyc"
    # nothing cached yet: the first zygote writes the caches, or compiles in memory either way
    monkeypatch.setattr(zygote_mod.os.path, "exists", lambda path: False)
    monkeypatch.setattr(zygote_mod.os, "access", lambda path, mode: True)
    assert zygote_mod._optimized_code_loads_as_well({})
    assert zygote_mod._optimized_code_loads_as_well({"PYTHONDONTWRITEBYTECODE": "1"})
    # the plain *.pyc cached, and writing the -OO ones turned off
    monkeypatch.setattr(zygote_mod.os.path, "exists", lambda path: not path.endswith(opt))
    assert not zygote_mod._optimized_code_loads_as_well({"PYTHONDONTWRITEBYTECODE": "1"})
    assert zygote_mod._optimized_code_loads_as_well({})
    # a read-only install with only the plain *.pyc: -OO would compile in memory
    monkeypatch.setattr(zygote_mod.os, "access", lambda path, mode: False)
    monkeypatch.setattr(zygote_mod.os.path, "exists", lambda path: not path.endswith(opt))
    assert not zygote_mod._optimized_code_loads_as_well({})
    # ... with the -OO caches as well
    monkeypatch.setattr(zygote_mod.os.path, "exists", lambda path: True)
    assert zygote_mod._optimized_code_loads_as_well({})
    # ... with none at all
    monkeypatch.setattr(zygote_mod.os.path, "exists", lambda path: False)
    assert zygote_mod._optimized_code_loads_as_well({})


async def test_zygote_runs_optimized_and_its_shims_serve(base: Path) -> None:
    """The warm process is ``python -OO``: docstrings and asserts are not in the image the
    shims share, and a shim forked from it serves a task (Connect, then Shutdown)."""
    zygote = Zygote(env=dict(env_for(base).environment(""), ARUN_ZYGOTE_OPTIMIZE="2"))
    await zygote.start()
    try:
        await _serve_one_optimized(base, zygote)
    finally:
        await zygote.close()


async def _serve_one_optimized(base: Path, zygote: Zygote) -> None:
    cmdline = Path(f"/proc/{zygote.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:4] == [b"-OO", b"-m", b"arun.runtime.zygote"]
    env = env_for(base)
    bnd = make_bundle(base, "opt")
    out, pid = await zygote.spawn(**spawn_args(env, bnd))
    await _serves_then_stops(out, "opt", pid)


async def test_zygote_matches_the_start_binary(base: Path, zygote: Zygote) -> None:
    env = env_for(base)
    a = make_bundle(base, "a")
    b = make_bundle(base, "b")
    logs = [os.open(x.path / "log", os.O_RDWR | os.O_NONBLOCK) for x in (a, b)]
    try:
        out, pid = await zygote.spawn(**spawn_args(env, a))
        by_zygote = binary.parse_start_output(out)
        by_binary = await binary.start(binary.builtin_shim(), env, b.path, "ns", "b", None)
        try:
            assert by_zygote.version == by_binary.version == 3
            # Same socket rule: <socket dir>/<sha256(grpc/ns/group)>.
            assert os.path.dirname(by_zygote.address) == os.path.dirname(by_binary.address)
            for _ in range(100):  # the zygote writes the files once it has replied
                if (a.path / "shim.pid").exists() and (a.path / "s").exists():
                    break
                await asyncio.sleep(0.01)
            assert sorted(p.name for p in a.path.iterdir()) == sorted(p.name for p in b.path.iterdir())
            assert (a.path / "shim.pid").read_text() == str(pid)
            assert (a.path / "address").read_text() == by_zygote.address
            assert os.readlink(a.path / "s") == env.socket_dir
            # Detached: not a child of the zygote (nor of us), its own session.
            assert pid != zygote.pid and _ppid(pid) not in (zygote.pid, os.getpid())
            assert os.getsid(pid) == pid
            # Spares wait under SCHED_IDLE (as root); a shim serving a task is back under SCHED_OTHER.
            assert os.sched_getscheduler(pid) == os.SCHED_OTHER
            await _answers_connect(by_zygote, "a", pid)
        finally:
            await _shutdown(by_zygote.address)
            await _shutdown(by_binary.address)
        assert await _gone(pid)
    finally:
        for fd in logs:
            os.close(fd)


async def test_a_start_needs_only_a_spare_the_daemon_holds(base: Path, zygote: Zygote) -> None:
    """The daemon handles a start itself, with a spare it holds: the zygote process only forks
    (stopped here, it is not needed), so its pages stay the ones every shim shares."""
    env = env_for(base)
    bnd = make_bundle(base, "held")
    log_fd = os.open(bnd.path / "log", os.O_RDWR | os.O_NONBLOCK)
    os.kill(zygote.pid, signal.SIGSTOP)
    try:
        out, pid = await asyncio.wait_for(zygote.spawn(**spawn_args(env, bnd)), 10)
        assert pid > 0 and _ppid(pid) != zygote.pid
        for _ in range(500):  # written once the spare has acknowledged, after the reply
            if (bnd.path / "shim.pid").exists():
                break
            await asyncio.sleep(0.01)
        assert (bnd.path / "shim.pid").read_text() == str(pid)
    finally:
        os.kill(zygote.pid, signal.SIGCONT)
    try:
        await _serves_then_stops(out, "held", pid)
    finally:
        os.close(log_fd)


async def test_zygote_reuses_the_pod_shim(base: Path, zygote: Zygote) -> None:
    env = env_for(base)
    pod = {"io.kubernetes.cri.sandbox-id": "pod1"}
    first = make_bundle(base, "pause", **pod)
    second = make_bundle(base, "app", **pod)
    log_fd = os.open(first.path / "log", os.O_RDWR | os.O_NONBLOCK)
    try:
        results = []
        for bnd in (first, second):
            results.append(await zygote.spawn(**spawn_args(env, bnd)))
        (out1, pid1), (out2, pid2) = results
        assert pid1 > 0 and pid2 == 0
        assert binary.parse_start_output(out1) == binary.parse_start_output(out2)
        await _shutdown(binary.parse_start_output(out1).address)
        assert await _gone(pid1)
    finally:
        os.close(log_fd)


async def test_zygote_errors_are_reported(base: Path, zygote: Zygote) -> None:
    env = env_for(base)
    bad = {**spawn_args(env, make_bundle(base, "x")), "namespace": ""}
    with pytest.raises(ZygoteError, match="namespace"):
        await zygote.spawn(**bad)
    # Still serving after a failed request.
    assert zygote.ready


async def test_bad_runtime_options_fail_the_request_and_leave_no_socket(base: Path, zygote: Zygote) -> None:
    """The spare is told its task before the reply: runtime options it could not decode fail the
    request itself (the daemon then falls back to the binary, which reports them), leave no
    socket behind, and the spare serves the next request."""
    env = env_for(base)
    with pytest.raises(ZygoteError, match="ValueError"):
        await zygote.spawn(**spawn_args(env, make_bundle(base, "x")), options=b"\xff\xff\xff")
    assert not os.path.exists(env.socket_dir) or os.listdir(env.socket_dir) == []
    good = make_bundle(base, "y")
    log_fd = os.open(good.path / "log", os.O_RDWR | os.O_NONBLOCK)
    try:
        out, pid = await zygote.spawn(**spawn_args(env, good))
        assert pid > 0
        await _shutdown(binary.parse_start_output(out).address)
        assert await _gone(pid)
    finally:
        os.close(log_fd)


async def test_manager_falls_back_to_the_binary(base: Path) -> None:
    env = env_for(base)
    shims = ShimManager(env)
    shims.start_zygote()
    assert await shims.wait_zygote()
    assert shims.zygote is not None
    os.kill(shims.zygote.pid, signal.SIGKILL)
    assert await _gone(shims.zygote.pid)
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


async def test_a_reply_left_by_a_dead_zygote_does_not_keep_it_alive(base: Path) -> None:
    """A zygote that answered a fork request and then died leaves its reply in the socket, which
    so still reads as open: a start must see that the zygote is gone (and the caller fall back
    to the binary), not go on with a spare as if it were there."""
    z = Zygote(env=env_for(base).environment(""))
    await z.start()
    try:
        assert z._sock is not None and z._fork_lock is not None
        async with z._fork_lock:  # no exchange of the replenisher's in between
            z._sock.send(b"f")
            for _ in range(500):
                try:
                    if z._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                        break
                except BlockingIOError:
                    pass
                await asyncio.sleep(0.01)
            os.kill(z.pid, signal.SIGKILL)
            assert await _gone(z.pid)
        with pytest.raises(ZygoteError):
            await z.spawn(**spawn_args(env_for(base), make_bundle(base, "late")))
    finally:
        await z.close()


async def test_zygote_exits_with_the_daemon_end(base: Path) -> None:
    z = Zygote(env=env_for(base).environment(""))
    await z.start()
    pid = z.pid
    await z.close()
    assert await _gone(pid)
    with pytest.raises(ZygoteError):
        await z.spawn(**spawn_args(env_for(base), make_bundle(base, "y")))


def spares_of(zygote: Zygote, env: ShimEnv) -> list[int]:
    """The zygote's waiting spares: forked from it, so with its command line and its environment
    (which names this test's own daemon address), but not it. Matching the command line alone
    would take in every other zygote on the machine (other daemons', other tests'), which the
    test below kills."""
    mark = f"GRPC_ADDRESS={env.grpc_address}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == zygote.pid:
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")
            with open(f"/proc/{entry.name}/comm", "rb") as fh:
                comm = fh.read().strip()
            if b"arun.runtime.zygote" not in cmd or comm == b"arun-shim":
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue
        if mark in environ:
            found.append(int(entry.name))
    return found


async def test_dead_spares_are_replaced_and_spares_die_with_the_zygote(base: Path) -> None:
    env = env_for(base)
    z = Zygote(env=env.environment(""))
    await z.start()
    try:
        spares = spares_of(z, env)
        assert len(spares) >= 1
        for pid in spares:
            os.kill(pid, signal.SIGKILL)
        for pid in spares:
            assert await _gone(pid)
        bnd = make_bundle(base, "c")
        log_fd = os.open(bnd.path / "log", os.O_RDWR | os.O_NONBLOCK)
        try:
            out, pid = await z.spawn(**spawn_args(env, bnd))
            assert pid not in spares
            result = binary.parse_start_output(out)
            conn = await ShimConnection.connect(result, "ns", lambda: None)
            try:
                resp = await conn.call("Connect", conn.request("Connect", id="c"))
                assert resp.shim_pid == pid
                assert Path(f"/proc/{pid}/comm").read_text().strip() == "arun-shim"
                # ps shows what the start binary would have launched, not the zygote
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert cmdline.startswith(b"containerd-shim-arun-v1 -namespace ns -id c")
                assert b"arun.runtime.zygote" not in cmdline
            finally:
                await conn.close()
            await _shutdown(result.address)
            assert await _gone(pid)
        finally:
            os.close(log_fd)
        waiting = await _spares_soon(z, env)
        assert waiting
    finally:
        await z.close()
    for pid in waiting:
        assert await _gone(pid)


async def _spares_soon(zygote: Zygote, env: ShimEnv) -> list[int]:
    """The zygote's spares once there are some (they are forked in the background), within ~2 s."""
    for _ in range(100):
        if spares_of(zygote, env):
            break
        await asyncio.sleep(0.02)
    return spares_of(zygote, env)


def _status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


async def test_the_rehearsal_leaves_the_template_as_it_was(base: Path) -> None:
    """warm() ran the rehearsal (containers through their lifecycle, under a stand-in runtime):
    the template has no child and no thread left, is no subreaper (so spares, forked through an
    intermediate, are not re-parented to it), and the shims it forks serve."""
    env = env_for(base)
    z = Zygote(env=dict(env.environment(""), ARUN_ZYGOTE_REHEARSAL="1"))
    await z.start()
    try:
        spares = await _spares_soon(z, env)
        assert spares
        assert all(_ppid(p) != z.pid for p in spares)
        children = Path(f"/proc/{z.pid}/task/{z.pid}/children").read_text().split()
        assert children == []
        assert _status_field(z.pid, "Threads") == "1"
        fds = os.listdir(f"/proc/{z.pid}/fd")
        assert not any("arun-rehearsal" in os.readlink(f"/proc/{z.pid}/fd/{fd}") for fd in fds)
        bnd = make_bundle(base, "r")
        log_fd = os.open(bnd.path / "log", os.O_RDWR | os.O_NONBLOCK)
        try:
            out, pid = await z.spawn(**spawn_args(env, bnd))
            await _serves_then_stops(out, "r", pid)
        finally:
            os.close(log_fd)
    finally:
        await z.close()


async def test_manager_starts_a_new_zygote_when_it_died(base: Path) -> None:
    env = env_for(base)
    shims = ShimManager(env)
    shims.start_zygote()
    assert await shims.wait_zygote()
    assert shims.zygote is not None
    first = shims.zygote.pid
    os.kill(first, signal.SIGKILL)
    assert await _gone(first)
    logs = []
    try:
        for name in ("c1", "c2"):
            bnd = make_bundle(base, name)
            logs.append(os.open(bnd.path / "log", os.O_RDWR | os.O_NONBLOCK))
            if name == "c1":
                # The dead zygote is noticed: this shim starts from the binary, and a new
                # zygote is started meanwhile.
                result = await shims.start(binary.builtin_shim(), bnd, None)
                assert shims.started == {"zygote": 0, "binary": 1}
                assert await shims.wait_zygote()
                assert shims.zygote.pid != first
            else:
                result = await shims.start(binary.builtin_shim(), bnd, None)
                assert shims.started == {"zygote": 1, "binary": 1}
            for _ in range(500):  # the zygote writes shim.pid just after its reply
                if (bnd.path / "shim.pid").exists():
                    break
                await asyncio.sleep(0.01)
            pid = int((bnd.path / "shim.pid").read_text())
            await _shutdown(result.address)
            assert await _gone(pid)
    finally:
        for fd in logs:
            os.close(fd)
        await shims.close()


def test_daemon_gone_before_ready_is_a_quiet_exit(base: Path) -> None:
    """SIGTERM right after boot closes the daemon's end while the zygote still warms up: the
    zygote leaves with status 0 and writes nothing (it used to print a BrokenPipeError)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    src = str(Path(__file__).resolve().parents[3] / "src")
    env = {**env_for(base).environment(""), "PYTHONPATH": src, "ARUN_ZYGOTE_SPARES": "1"}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "arun.runtime.zygote", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    finally:
        theirs.close()
    ours.close()  # before the zygote has imported the shim: its "ready" finds no reader
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, err.decode(), out.decode()) == (0, "", "")


@pytest.mark.ksm
@pytest.mark.parametrize("merge", [True, False])
async def test_zygote_marks_shim_memory_mergeable_on_request(base: Path, merge: bool) -> None:
    """With ``merge_memory`` the zygote's shims inherit memory marked for the kernel's
    same-page merging (``mg`` in smaps); without it, nothing is marked."""
    env = env_for(base)
    shims = ShimManager(env, merge_memory=merge)
    shims.start_zygote()
    try:
        assert await shims.wait_zygote()
        assert shims.zygote is not None
        b = make_bundle(base, "m")
        log_fd = os.open(b.path / "log", os.O_RDWR | os.O_NONBLOCK)
        try:
            out, pid = await shims.zygote.spawn(**spawn_args(env, b))
            try:
                marked = ksm.mergeable_kib(pid)
            finally:
                await _shutdown(binary.parse_start_output(out).address)
            assert await _gone(pid)
        finally:
            os.close(log_fd)
        if merge:
            assert marked > 1024, f"only {marked} KiB of the shim is mergeable"
        else:
            assert marked == 0
    finally:
        await shims.close()
