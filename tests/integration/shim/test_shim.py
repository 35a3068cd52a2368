"""The real shim binary, started with ``start`` and driven over ttrpc, running busybox in runc."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from arun import errdefs
from arun.api.containerd.runtime.task.v2 import shim_pb2 as v2
from arun.api.containerd.types.task import task_pb2 as types_pb2

from .conftest import ShimEnv, exists, pid_alive, wait_gone

pytestmark = [pytest.mark.root, pytest.mark.runc, pytest.mark.integration]


async def read_fifo(fd: int, until: bytes = b"") -> bytes:
    """Read a non-blocking FIFO until ``until`` appears, or EOF (within 10 s)."""
    out = b""
    async with asyncio.timeout(10):
        while not until or until not in out:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.02)
                continue
            if not data:
                break
            out += data
    return out


def create_request(env: ShimEnv, id: str, bundle: str, **kw: Any) -> Any:
    req = v2.CreateTaskRequest(id=id, bundle=bundle, **kw)
    req.rootfs.add(type="bind", source=str(env.rootfs_source), options=["rbind", "rw"])
    return req


def mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


async def test_lifecycle_stdio_events_and_shutdown(shim_env: ShimEnv) -> None:
    env = shim_env
    id = env.unique_id()
    script = "echo out; echo err >&2; read line; echo got $line; exit 3"
    bundle = env.bundle(id, ["/bin/busybox", "sh", "-c", script])
    address = await env.start_shim(bundle, id)
    task = await env.connect(address)
    stdin, stdout, stderr = env.fifo("in"), env.fifo("out"), env.fifo("err")
    out_r = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
    err_r = os.open(stderr, os.O_RDONLY | os.O_NONBLOCK)
    created = await task.Create(create_request(env, id, bundle, stdin=stdin, stdout=stdout, stderr=stderr))
    assert created.pid > 0
    assert mounted(os.path.join(bundle, "rootfs"))
    connect = await task.Connect(v2.ConnectRequest(id=id))
    assert connect.task_pid == created.pid and connect.shim_pid > 0
    env.shim_pids.add(connect.shim_pid)
    st = await task.State(v2.StateRequest(id=id))
    assert (st.status, st.pid, st.bundle) == (types_pb2.CREATED, created.pid, bundle)
    in_w = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
    assert (await task.Start(v2.StartRequest(id=id))).pid == created.pid
    assert (await task.State(v2.StateRequest(id=id))).status == types_pb2.RUNNING
    pids = await task.Pids(v2.PidsRequest(id=id))
    assert created.pid in [p.pid for p in pids.processes]
    os.write(in_w, b"hello\n")
    os.close(in_w)
    await task.CloseIO(v2.CloseIORequest(id=id, stdin=True))
    waited = await task.Wait(v2.WaitRequest(id=id), timeout=20)
    assert waited.exit_status == 3
    assert await read_fifo(out_r) == b"out\ngot hello\n"
    assert await read_fifo(err_r) == b"err\n"
    st = await task.State(v2.StateRequest(id=id))
    assert (st.status, st.exit_status) == (types_pb2.STOPPED, 3)
    deleted = await task.Delete(v2.DeleteRequest(id=id))
    assert (deleted.pid, deleted.exit_status) == (created.pid, 3)
    assert not mounted(os.path.join(bundle, "rootfs"))
    await env.events.wait_for("/tasks/delete", id)
    assert env.events.topics(id) == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    exit_ev = next(f for f in env.events.received if f.topic == "/tasks/exit")
    assert exit_ev.namespace == env.namespace and exit_ev.type_url == "containerd.events.TaskExit"
    assert (exit_ev.event.pid, exit_ev.event.exit_status) == (created.pid, 3)
    with pytest.raises(errdefs.NotFoundError):
        await task.State(v2.StateRequest(id=id))
    # no container left: Shutdown ends the process and removes its socket
    await task.Shutdown(v2.ShutdownRequest(id=id))
    await wait_gone(connect.shim_pid)
    assert not exists(address[len("unix://") :])
    os.close(out_r)
    os.close(err_r)


async def test_exec_kill_pause_and_exit_codes(shim_env: ShimEnv) -> None:
    env = shim_env
    id = env.unique_id()
    bundle = env.bundle(id, ["/bin/busybox", "sleep", "1000"])
    task = await env.connect(await env.start_shim(bundle, id))
    created = await task.Create(create_request(env, id, bundle))
    env.shim_pids.add((await task.Connect(v2.ConnectRequest(id=id))).shim_pid)
    await task.Start(v2.StartRequest(id=id))
    out = env.fifo("exec-out")
    out_r = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    req = v2.ExecProcessRequest(id=id, exec_id="e1", stdout=out)
    req.spec.value = json.dumps(
        {"args": ["/bin/busybox", "sh", "-c", "echo from exec; exit 42"], "cwd": "/", "env": ["PATH=/bin"]}
    ).encode()
    await task.Exec(req)
    with pytest.raises(errdefs.AlreadyExistsError):
        await task.Exec(req)
    started = await task.Start(v2.StartRequest(id=id, exec_id="e1"))
    assert started.pid > 0 and started.pid != created.pid
    waited = await task.Wait(v2.WaitRequest(id=id, exec_id="e1"), timeout=20)
    assert waited.exit_status == 42
    assert await read_fifo(out_r) == b"from exec\n"
    await task.Delete(v2.DeleteRequest(id=id, exec_id="e1"))
    # a long-running exec shows up in Pids with its exec id
    req2 = v2.ExecProcessRequest(id=id, exec_id="e2")
    req2.spec.value = json.dumps({"args": ["/bin/busybox", "sleep", "1000"], "cwd": "/"}).encode()
    await task.Exec(req2)
    e2 = await task.Start(v2.StartRequest(id=id, exec_id="e2"))
    from arun.api.containerd.types.runc.options import oci_pb2

    infos = {p.pid: p.info for p in (await task.Pids(v2.PidsRequest(id=id))).processes}
    assert oci_pb2.ProcessDetails.FromString(infos[e2.pid].value).exec_id == "e2"
    await task.Pause(v2.PauseRequest(id=id))
    assert (await task.State(v2.StateRequest(id=id))).status == types_pb2.PAUSED
    assert (await task.State(v2.StateRequest(id=id, exec_id="e2"))).status == types_pb2.PAUSED
    await task.Resume(v2.ResumeRequest(id=id))
    await task.Kill(v2.KillRequest(id=id, exec_id="e2", signal=15))
    assert (await task.Wait(v2.WaitRequest(id=id, exec_id="e2"), timeout=20)).exit_status == 128 + 15
    await task.Kill(v2.KillRequest(id=id, signal=9, all=True))
    assert (await task.Wait(v2.WaitRequest(id=id), timeout=20)).exit_status == 137
    with pytest.raises(errdefs.NotFoundError):
        await task.Kill(v2.KillRequest(id=id, signal=9))
    await task.Delete(v2.DeleteRequest(id=id))
    await env.events.wait_for("/tasks/delete", id)
    topics = env.events.topics(id)
    assert topics[:2] == ["/tasks/create", "/tasks/start"]
    assert topics.index("/tasks/exec-added") < topics.index("/tasks/exec-started")
    assert "/tasks/paused" in topics and "/tasks/resumed" in topics
    assert topics[-2:] == ["/tasks/exit", "/tasks/delete"]
    os.close(out_r)


async def test_terminal(shim_env: ShimEnv) -> None:
    env = shim_env
    id = env.unique_id()
    bundle = env.bundle(id, ["/bin/busybox", "sh"], terminal=True)
    task = await env.connect(await env.start_shim(bundle, id))
    stdin, stdout = env.fifo("tin"), env.fifo("tout")
    out_r = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
    await task.Create(create_request(env, id, bundle, stdin=stdin, stdout=stdout, terminal=True))
    env.shim_pids.add((await task.Connect(v2.ConnectRequest(id=id))).shim_pid)
    in_w = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
    await task.Start(v2.StartRequest(id=id))
    st = await task.State(v2.StateRequest(id=id))
    assert st.terminal
    await task.ResizePty(v2.ResizePtyRequest(id=id, width=91, height=17))
    os.write(in_w, b"stty size; tty; exit 7\n")
    assert (await task.Wait(v2.WaitRequest(id=id), timeout=20)).exit_status == 7
    out = await read_fifo(out_r, until=b"/dev/pts/")
    assert b"17 91" in out and b"/dev/pts/" in out
    await task.Delete(v2.DeleteRequest(id=id))
    os.close(in_w)
    os.close(out_r)


async def test_oom_and_stats(shim_env: ShimEnv) -> None:
    from arun.api.cgroups.v1 import metrics_pb2

    env = shim_env
    idle = env.unique_id("idle")
    bundle = env.bundle(idle, ["/bin/busybox", "sleep", "1000"])
    task = await env.connect(await env.start_shim(bundle, idle))
    await task.Create(create_request(env, idle, bundle))
    env.shim_pids.add((await task.Connect(v2.ConnectRequest(id=idle))).shim_pid)
    await task.Start(v2.StartRequest(id=idle))
    stats = await task.Stats(v2.StatsRequest(id=idle))
    assert stats.stats.type_url == "io.containerd.cgroups.v1.Metrics"
    m = metrics_pb2.Metrics.FromString(stats.stats.value)
    assert m.memory.usage.usage > 0
    assert m.cpu.usage.total > 0
    assert m.pids.current >= 1
    await task.Kill(v2.KillRequest(id=idle, signal=9))
    await task.Wait(v2.WaitRequest(id=idle), timeout=20)
    await task.Delete(v2.DeleteRequest(id=idle))

    hog = env.unique_id("oom")
    bundle = env.bundle(hog, ["/bin/busybox", "tail", "/dev/zero"], memory_limit=16 << 20)
    task = await env.connect(await env.start_shim(bundle, hog))
    await task.Create(create_request(env, hog, bundle))
    env.shim_pids.add((await task.Connect(v2.ConnectRequest(id=hog))).shim_pid)
    await task.Start(v2.StartRequest(id=hog))
    assert (await task.Wait(v2.WaitRequest(id=hog), timeout=30)).exit_status == 137
    await env.events.wait_for("/tasks/oom", hog)
    await task.Delete(v2.DeleteRequest(id=hog))


async def test_containers_of_a_pod_share_one_shim(shim_env: ShimEnv) -> None:
    env = shim_env
    sandbox = env.unique_id("pod")
    annotations = {"io.kubernetes.cri.sandbox-id": sandbox}
    ids = [sandbox, env.unique_id("app")]
    addresses = []
    for id in ids:
        bundle = env.bundle(id, ["/bin/busybox", "sleep", "1000"], annotations=annotations)
        addresses.append((await env.start_shim(bundle, id), bundle))
    assert addresses[0][0] == addresses[1][0]
    task = await env.connect(addresses[0][0])
    for id, (_addr, bundle) in zip(ids, addresses, strict=True):
        await task.Create(create_request(env, id, bundle))
        await task.Start(v2.StartRequest(id=id))
    shim_pid = (await task.Connect(v2.ConnectRequest(id=ids[0]))).shim_pid
    env.shim_pids.add(shim_pid)
    assert (await task.Connect(v2.ConnectRequest(id=ids[1]))).shim_pid == shim_pid
    for id in ids:
        await task.Kill(v2.KillRequest(id=id, signal=9))
        await task.Wait(v2.WaitRequest(id=id), timeout=20)
    await task.Delete(v2.DeleteRequest(id=ids[1]))
    await task.Shutdown(v2.ShutdownRequest(id=ids[1]))
    await asyncio.sleep(0.2)
    assert pid_alive(shim_pid), "the shim must stay while the pod has a container"
    await task.Delete(v2.DeleteRequest(id=ids[0]))
    await task.Shutdown(v2.ShutdownRequest(id=ids[0]))
    await wait_gone(shim_pid)


async def test_v3_service_and_bootstrap_protocol(shim_env: ShimEnv) -> None:
    from arun.api.containerd.runtime.bootstrap.v1 import bootstrap_pb2
    from arun.api.containerd.runtime.task.v3 import shim_pb2 as v3
    from arun.api.containerd.types.runc.options import oci_pb2

    env = shim_env
    id = env.unique_id()
    bundle = env.bundle(id, ["/bin/busybox", "true"])
    params = bootstrap_pb2.BootstrapParams(
        instance_id=id,
        namespace=env.namespace,
        containerd_ttrpc_address=env.events_address,
        containerd_grpc_address=env.grpc_address,
        containerd_binary="/bin/true",
        socket_dir=env.socket_dir,
    )
    ext = params.extensions.add()
    ext.value.type_url = "containerd.runc.v1.Options"
    ext.value.value = oci_pb2.Options(root=env.runc_root).SerializeToString()
    proc = await env.run_shim(bundle, id, "start", stdin=params.SerializeToString(), ARUN_SHIM_SOCKET_DIR="")
    assert proc.returncode == 0, proc.stderr
    result = bootstrap_pb2.BootstrapResult.FromString(proc.stdout)
    assert (result.version, result.protocol) == (3, "ttrpc")
    assert result.address.startswith(f"unix://{env.socket_dir}/")
    assert os.readlink(os.path.join(bundle, "s")) == env.socket_dir
    env.shim_pids.add(int(await asyncio.to_thread(Path(bundle, "shim.pid").read_text)))
    # a second start (flag form, containerd 1.7+) finds the same live shim
    again = await env.run_shim(bundle, id, "start", MAX_SHIM_VERSION="2")
    assert json.loads(again.stdout) == {"version": 2, "address": result.address, "protocol": "ttrpc"}
    task = await env.connect(result.address, version=3)
    req = v3.CreateTaskRequest(id=id, bundle=bundle)
    req.rootfs.add(type="bind", source=str(env.rootfs_source), options=["rbind", "rw"])
    await task.Create(req)
    await task.Start(v3.StartRequest(id=id))
    resp = await task.Wait(v3.WaitRequest(id=id), timeout=20)
    assert isinstance(resp, v3.WaitResponse) and resp.exit_status == 0
    await task.Delete(v3.DeleteRequest(id=id))
    assert env.events.topics(id)[:1] == ["/tasks/create"]


async def test_delete_command_after_the_shim_died(shim_env: ShimEnv) -> None:
    env = shim_env
    id = env.unique_id()
    bundle = env.bundle(id, ["/bin/busybox", "sleep", "1000"])
    task = await env.connect(await env.start_shim(bundle, id))
    created = await task.Create(create_request(env, id, bundle))
    await task.Start(v2.StartRequest(id=id))
    shim_pid = (await task.Connect(v2.ConnectRequest(id=id))).shim_pid
    os.kill(shim_pid, 9)
    await wait_gone(shim_pid)
    before = time.time()
    proc = await env.run_shim(bundle, id, "delete", "-bundle", bundle)
    assert proc.returncode == 0, proc.stderr
    resp = v2.DeleteResponse.FromString(proc.stdout)
    assert (resp.pid, resp.exit_status) == (created.pid, 137)
    assert resp.exited_at.seconds >= int(before) - 1
    assert not mounted(os.path.join(bundle, "rootfs"))
    assert not pid_alive(created.pid)
    listed = await asyncio.to_thread(
        __import__("subprocess").run,
        ["runc", "--root", os.path.join(env.runc_root, env.namespace), "list", "-q"],
        capture_output=True,
        text=True,
    )
    assert id not in listed.stdout.split()


async def test_bad_requests_leave_nothing_behind(shim_env: ShimEnv) -> None:
    env = shim_env
    id = env.unique_id()
    bundle = env.bundle(id, ["/bin/busybox", "no-such-applet-or-file"])
    task = await env.connect(await env.start_shim(bundle, id))
    env.shim_pids.add((await task.Connect(v2.ConnectRequest(id=id))).shim_pid)
    bad = v2.CreateTaskRequest(id=id, bundle=bundle)
    bad.rootfs.add(type="bind", source=str(env.root / "does-not-exist"), options=["rbind"])
    with pytest.raises(errdefs.NotFoundError):
        await task.Create(bad)
    assert not mounted(os.path.join(bundle, "rootfs"))
    spec_bundle = env.bundle(env.unique_id(), ["/no/such/binary"])
    with pytest.raises(errdefs.ArunError, match="runc create failed"):
        await task.Create(create_request(env, "broken", spec_bundle))
    assert not mounted(os.path.join(spec_bundle, "rootfs"))
    with pytest.raises(errdefs.NotFoundError):
        await task.State(v2.StateRequest(id="broken"))
    assert env.events.topics() == []
