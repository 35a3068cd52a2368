"""The shim server started the zygote way: ``preload()`` in a template process, then ``fork`` and
``serve(params, listener_fd)`` in the child. No root needed: no container is created."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
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


def test_serve_after_fork_from_a_preloaded_template(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    os.mkfifo(bundle / "log")
    log_r = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)
    sock = tmp_path / "s.sock"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        res = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(bundle), str(sock)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.split("\n")[:3] == ["connect True 0", "state NotFound", "exit 0 False"]
        # the child logged JSON lines to the bundle's log FIFO
        logged = os.read(log_r, 65536).decode()
    finally:
        os.close(log_r)
    assert '"msg": "shim z1 serving on' in logged
