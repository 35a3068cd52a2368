"""The shim server started the zygote way: ``preload()`` in a template process, then ``fork`` and
``serve(params, listener_fd)`` in the child. No root needed: no container is created."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from arun.shim import manager, server

    server.preload()
    bundle, sock_path = sys.argv[1], sys.argv[2]
    listener = manager.listen(sock_path)
    params = server.ServeParams(namespace="zygote-test", id="z1", bundle=bundle)
    pid = os.fork()
    if pid == 0:
        os._exit(server.serve(params, listener.fileno()))
    listener.close()

    async def drive():
        from arun.errdefs import grpc as errgrpc
        from arun.ttrpc import Client, ServiceStub
        from arun.api.containerd.runtime.task.v2 import shim_pb2 as v2
        from arun import errdefs

        client = await Client.connect(sock_path, timeout=10, from_status=errgrpc.from_code)
        task = ServiceStub(client, "containerd.task.v2.Task")
        c = await task.Connect(v2.ConnectRequest(id="z1"))
        print("connect", c.shim_pid == pid, c.task_pid)
        try:
            await task.State(v2.StateRequest(id="nope"))
        except errdefs.NotFoundError as exc:
            print("state", "NotFound")
        await task.Shutdown(v2.ShutdownRequest(id="z1"))
        await client.close()

    asyncio.run(drive())
    _, status = os.waitpid(pid, 0)
    print("exit", os.waitstatus_to_exitcode(status), os.path.exists(sock_path))
    """
)


def _run_in_a_bundle(
    tmp_path: Path, script: str, timeout: float, **extra_env: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``script BUNDLE SOCKET`` in a fresh Python; its result and what it logged into the
    bundle's log FIFO."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    os.mkfifo(bundle / "log")
    log_r = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **extra_env)
    try:
        res = subprocess.run(
            [sys.executable, "-c", script, str(bundle), str(tmp_path / "s.sock")],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        logged = os.read(log_r, 65536).decode() if res.returncode == 0 else ""
    finally:
        os.close(log_r)
    return res, logged


def test_serve_after_fork_from_a_preloaded_template(tmp_path: Path) -> None:
    res, logged = _run_in_a_bundle(tmp_path, SCRIPT, 60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:3] == ["connect True 0", "state NotFound", "exit 0 False"]
    # the child logged JSON lines to the bundle's log FIFO
    assert '"msg": "shim z1 serving on' in logged


def test_start_command_launches_a_server_that_exits_on_sigterm(tmp_path: Path) -> None:
    """``start`` binds the socket and detaches the server; a second ``start`` for the same pod
    returns the same address; SIGTERM ends the server, which removes its socket. (No container:
    no root needed.)"""
    short = Path(tempfile.mkdtemp(prefix="ss-", dir="/tmp"))  # socket paths must fit in 108 bytes
    try:
        _start_and_sigterm(tmp_path, short)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def _handles_sigterm(pid: int) -> bool:
    """Whether ``pid`` blocks or catches SIGTERM (so a SIGTERM is no longer fatal by default)."""
    bit = 1 << (signal.SIGTERM - 1)
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return bool((int(fields["SigBlk"], 16) | int(fields["SigCgt"], 16)) & bit)


def _start_and_sigterm(tmp_path: Path, short: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}}))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(sys.path),
        ARUN_SHIM_SOCKET_DIR=str(short / "s"),
        TTRPC_ADDRESS="",
    )
    env.pop("MAX_SHIM_VERSION", None)
    cmd = [sys.executable, "-m", "arun.shim", "-namespace", "ns1", "-address", "/x.sock", "-id"]
    first = subprocess.run([*cmd, "c1", "start"], cwd=bundle, env=env, capture_output=True, timeout=30)
    assert first.returncode == 0, first.stderr
    pid = int((bundle / "shim.pid").read_text())
    try:
        address = first.stdout.decode()
        assert address.startswith(f"unix://{short}/s/")
        assert len(address) == len(f"unix://{short}/s/") + 64
        second = subprocess.run([*cmd, "c2", "start"], cwd=bundle, env=env, capture_output=True, timeout=30)
        assert second.stdout.decode() == address
        assert int((bundle / "shim.pid").read_text()) == pid  # no second server
        assert (bundle / "address").read_text() == address
        path = address[len("unix://") :]
        deadline = time.monotonic() + 20
        while not _handles_sigterm(pid):  # the server process has taken over (blocked or caught)
            assert time.monotonic() < deadline, "the shim server never took charge of SIGTERM"
            time.sleep(0.05)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# A shim-in-waiting for the scripts below: its loop runs before it knows its task; a "g" on the
# returned socket activates it as shim ``id`` serving on ``path``, an end-of-file lets it go.
FORK_SPARE = textwrap.dedent(
    """
    import asyncio, os, socket
    from arun.shim import manager, server

    def fork_spare(namespace, id, bundle, path):
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            theirs.setblocking(False)

            async def activation():
                got = await asyncio.get_running_loop().sock_recv(theirs, 1)
                if got != b"g":
                    return None
                params = server.ServeParams(namespace=namespace, id=id, bundle=bundle)
                return params, manager.listen(path).detach()

            os._exit(server.serve_prepared(activation))
        theirs.close()
        return pid, ours
    """
)

PREPARED = FORK_SPARE + textwrap.dedent(
    """
    import asyncio, os, signal, socket, sys, time
    from arun.shim import manager, server

    server.preload()
    bundle, sock_path = sys.argv[1], sys.argv[2]

    def spare():
        return fork_spare("zygote-test", "z2", bundle, sock_path)

    def status(pid):
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    # let go of (end-of-file): exits 0
    pid, ours = spare()
    ours.close()
    print("eof", status(pid))

    # SIGTERM while waiting: exits 0 (once its loop handles the signal)
    pid, ours = spare()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        if int(fields["SigCgt"], 16) & (1 << (signal.SIGTERM - 1)):
            break
        time.sleep(0.02)
    os.kill(pid, signal.SIGTERM)
    print("term", status(pid))
    ours.close()

    # activated: serves the task API on the listener it was given, logs to the bundle's FIFO
    pid, ours = spare()
    ours.sendall(b"g")
    deadline = time.monotonic() + 20
    while not os.path.exists(sock_path) and time.monotonic() < deadline:
        time.sleep(0.02)

    async def drive():
        from arun.errdefs import grpc as errgrpc
        from arun.ttrpc import Client, ServiceStub
        from arun.api.containerd.runtime.task.v3 import shim_pb2 as v3

        client = await Client.connect(sock_path, timeout=10, from_status=errgrpc.from_code)
        task = ServiceStub(client, "containerd.task.v3.Task")
        c = await task.Connect(v3.ConnectRequest(id="z2"))
        print("connect", c.shim_pid == pid, os.getcwd() != bundle)
        await task.Shutdown(v3.ShutdownRequest(id="z2"))
        await client.close()

    asyncio.run(drive())
    print("exit", status(pid), os.path.exists(sock_path))
    ours.close()
    """
)


def test_a_prepared_spare_serves_once_activated(tmp_path: Path) -> None:
    """``serve_prepared``: the loop runs before the task is known; end-of-file or SIGTERM before
    activation is a quiet exit; once activated it serves like ``serve`` (and logs into the
    bundle's FIFO)."""
    res, logged = _run_in_a_bundle(tmp_path, PREPARED, 90)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:4] == ["eof 0", "term 0", "connect True True", "exit 0 False"]
    assert '"msg": "shim z2 serving on' in logged
