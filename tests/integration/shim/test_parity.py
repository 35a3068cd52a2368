"""arun's shim against the reference: the same Task API edge cases sent to Debian's
``containerd-shim-runc-v2`` (containerd 1.6) and to ``containerd-shim-arun-v1`` must give the
same answers — the same error code for every refused call, the same exit statuses, the same
resources after Update, the same kinds of metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from arun import errdefs
from arun.api.containerd.runtime.task.v2 import shim_pb2 as v2

from .conftest import ShimEnv, wait_gone

pytestmark = [pytest.mark.root, pytest.mark.runc, pytest.mark.integration, pytest.mark.containerd]

GO_SHIM = "containerd-shim-runc-v2"
SLEEP = ["/bin/busybox", "sleep", "1000"]


def _exec_spec(args: list[str]) -> bytes:
    return json.dumps({"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}).encode()


async def start_go_shim(env: ShimEnv, bundle: str, id: str, sockets: list[str], log_fds: list[int]) -> str:
    """``containerd-shim-runc-v2 … start`` as containerd 1.6 runs it; the address it prints."""
    cmd = [shutil.which(GO_SHIM) or GO_SHIM, "-namespace", env.namespace, "-address", env.grpc_address,
           "-publish-binary", "/bin/true", "-id", id, "start"]  # fmt: skip
    # The shim server writes its log to the bundle's FIFO, as containerd provides it.
    os.mkfifo(os.path.join(bundle, "log"))
    log_fds.append(os.open(os.path.join(bundle, "log"), os.O_RDONLY | os.O_NONBLOCK))
    proc = await asyncio.to_thread(
        subprocess.run, cmd, cwd=bundle, capture_output=True, env=env.env(), timeout=30
    )
    address = proc.stdout.decode().strip()
    if address.startswith("unix://"):
        sockets.append(address[len("unix://") :])  # the 1.6 shim's socket is not under env.root
    assert proc.returncode == 0, proc.stderr.decode()
    assert address.startswith("unix://"), address
    task = await env.connect(address)
    with contextlib.suppress(errdefs.ArunError):  # 1.6 answers Connect before Create
        env.shim_pids.add((await task.Connect(v2.ConnectRequest(id=id))).shim_pid)
    return address


def _runc_options(env: ShimEnv) -> Any:
    from google.protobuf import any_pb2

    from arun.api.containerd.types.runc.options import oci_pb2

    return any_pb2.Any(
        type_url="containerd.runc.v1.Options", value=oci_pb2.Options(root=env.runc_root).SerializeToString()
    )


def _resources(limit: int) -> Any:
    from google.protobuf import any_pb2

    value = json.dumps({"memory": {"limit": limit}, "cpu": {"shares": 256}}).encode()
    return any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", value=value
    )


def _cgroup_file(env: ShimEnv, id: str, controller: str, name: str) -> str:
    return Path("/sys/fs/cgroup", controller, env.cgroup_parent, id, name).read_text().strip()


async def scenario(
    env: ShimEnv, kind: str, sockets: list[str], log_fds: list[int]
) -> list[tuple[str, object]]:
    """Run the edge cases against one shim; (step, outcome) with outcome an error class name or
    a summary of the answer."""
    id = env.unique_id(kind)
    bundle = env.bundle(id, SLEEP)
    address = await (
        start_go_shim(env, bundle, id, sockets, log_fds) if kind == "go" else env.start_shim(bundle, id)
    )
    task = await env.connect(address)
    out: list[tuple[str, object]] = []

    async def step(name: str, call: Awaitable[Any], summary: Any = None) -> Any:
        try:
            resp = await call
        except errdefs.ArunError as e:
            out.append((name, type(e).__name__))
            return None
        out.append((name, "ok" if summary is None else summary(resp)))
        return resp

    def exec_req(exec_id: str, args: list[str], **kw: Any) -> Any:
        req = v2.ExecProcessRequest(id=id, exec_id=exec_id, **kw)
        req.spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process"
        req.spec.value = _exec_spec(args)
        return req

    status = lambda r: (r.status, r.exit_status)  # noqa: E731
    exit_status = lambda r: r.exit_status  # noqa: E731

    req = v2.CreateTaskRequest(id=id, bundle=bundle, options=_runc_options(env))
    req.rootfs.add(type="bind", source=str(env.rootfs_source), options=["rbind", "rw"])
    created = await task.Create(req)
    shim_pid = (await task.Connect(v2.ConnectRequest(id=id))).shim_pid
    env.shim_pids.add(shim_pid)
    await step("start-init", task.Start(v2.StartRequest(id=id)), lambda r: r.pid == created.pid)
    await step("start-init-again", task.Start(v2.StartRequest(id=id)))
    await step("state-unknown-exec", task.State(v2.StateRequest(id=id, exec_id="nope")))
    await step("state-unknown-task", task.State(v2.StateRequest(id="nope")))
    # exec ids
    await step("exec-e1", task.Exec(exec_req("e1", ["/bin/busybox", "sh", "-c", "exit 3"])))
    await step("exec-e1-again", task.Exec(exec_req("e1", SLEEP)))
    await step("state-e1-created", task.State(v2.StateRequest(id=id, exec_id="e1")), status)
    await step("start-e1", task.Start(v2.StartRequest(id=id, exec_id="e1")), lambda r: r.pid > 0)
    await step("wait-e1", task.Wait(v2.WaitRequest(id=id, exec_id="e1"), timeout=20), exit_status)
    await step("wait-e1-after-exit", task.Wait(v2.WaitRequest(id=id, exec_id="e1"), timeout=20), exit_status)
    await step("start-e1-again", task.Start(v2.StartRequest(id=id, exec_id="e1")))
    await step("kill-e1-exited", task.Kill(v2.KillRequest(id=id, exec_id="e1", signal=9)))
    await step("state-e1-stopped", task.State(v2.StateRequest(id=id, exec_id="e1")), status)
    await step("delete-e1", task.Delete(v2.DeleteRequest(id=id, exec_id="e1")), exit_status)
    await step("delete-e1-again", task.Delete(v2.DeleteRequest(id=id, exec_id="e1")))
    await step("wait-e1-deleted", task.Wait(v2.WaitRequest(id=id, exec_id="e1"), timeout=5))
    await step("exec-e1-reused", task.Exec(exec_req("e1", ["/bin/busybox", "true"])))
    await step("delete-e1-never-started", task.Delete(v2.DeleteRequest(id=id, exec_id="e1")), exit_status)
    # a created, never started exec
    await step("exec-e2", task.Exec(exec_req("e2", SLEEP)))
    await step("kill-e2-created", task.Kill(v2.KillRequest(id=id, exec_id="e2", signal=9)))
    await step("delete-e2-created", task.Delete(v2.DeleteRequest(id=id, exec_id="e2")), exit_status)
    # a running exec
    await step("exec-e3", task.Exec(exec_req("e3", SLEEP)))
    e3 = await step("start-e3", task.Start(v2.StartRequest(id=id, exec_id="e3")), lambda r: r.pid > 0)

    def exec_ids(r: Any) -> list[str]:
        from arun.api.containerd.types.runc.options import oci_pb2

        ids = []
        for p in r.processes:
            ids.append(oci_pb2.ProcessDetails.FromString(p.info.value).exec_id if p.info.value else "")
        return sorted(ids)

    await step("pids", task.Pids(v2.PidsRequest(id=id)), exec_ids)
    await step("pids-has-init-and-e3", task.Pids(v2.PidsRequest(id=id)),
               lambda r: {created.pid, e3.pid} <= {p.pid for p in r.processes})  # fmt: skip
    await step("delete-e3-running", task.Delete(v2.DeleteRequest(id=id, exec_id="e3")))
    await step(
        "resize-e3-no-terminal", task.ResizePty(v2.ResizePtyRequest(id=id, exec_id="e3", width=80, height=24))
    )
    await step("closeio-e3-no-stdin", task.CloseIO(v2.CloseIORequest(id=id, exec_id="e3", stdin=True)))
    await step("kill-e3", task.Kill(v2.KillRequest(id=id, exec_id="e3", signal=15)))
    await step("wait-e3", task.Wait(v2.WaitRequest(id=id, exec_id="e3"), timeout=20), exit_status)
    await step("delete-e3", task.Delete(v2.DeleteRequest(id=id, exec_id="e3")), exit_status)
    # unknown exec ids
    await step("kill-unknown-exec", task.Kill(v2.KillRequest(id=id, exec_id="nope", signal=9)))
    await step("wait-unknown-exec", task.Wait(v2.WaitRequest(id=id, exec_id="nope"), timeout=5))
    await step(
        "resize-unknown-exec", task.ResizePty(v2.ResizePtyRequest(id=id, exec_id="nope", width=1, height=1))
    )
    await step("closeio-unknown-exec", task.CloseIO(v2.CloseIORequest(id=id, exec_id="nope", stdin=True)))
    await step("delete-unknown-exec", task.Delete(v2.DeleteRequest(id=id, exec_id="nope")))
    # the init process
    await step("resize-init-no-terminal", task.ResizePty(v2.ResizePtyRequest(id=id, width=80, height=24)))
    await step("closeio-init-no-stdin", task.CloseIO(v2.CloseIORequest(id=id, stdin=True)))
    await step("update", task.Update(v2.UpdateTaskRequest(id=id, resources=_resources(64 << 20))))
    out.append(("memory-limit", _cgroup_file(env, id, "memory", "memory.limit_in_bytes")))
    out.append(("cpu-shares", _cgroup_file(env, id, "cpu", "cpu.shares")))
    await step("update-bad-resources", task.Update(v2.UpdateTaskRequest(id=id, resources=_resources(-5))))

    def metrics(r: Any) -> tuple[str, list[str]]:
        from arun.api.cgroups.v1 import metrics_pb2

        m = metrics_pb2.Metrics.FromString(r.stats.value)
        return r.stats.type_url, sorted(f.name for f, _ in m.ListFields())

    await step("stats", task.Stats(v2.StatsRequest(id=id)), metrics)
    await step("pause", task.Pause(v2.PauseRequest(id=id)))
    await step("state-paused", task.State(v2.StateRequest(id=id)), status)
    await step("pause-again", task.Pause(v2.PauseRequest(id=id)))
    await step("resume", task.Resume(v2.ResumeRequest(id=id)))
    await step("resume-again", task.Resume(v2.ResumeRequest(id=id)))
    await step("delete-init-running", task.Delete(v2.DeleteRequest(id=id)))
    await step("state-still-running", task.State(v2.StateRequest(id=id)), status)
    await step("kill-init", task.Kill(v2.KillRequest(id=id, signal=9)))
    await step("wait-init", task.Wait(v2.WaitRequest(id=id), timeout=20), exit_status)
    await step("wait-init-after-exit", task.Wait(v2.WaitRequest(id=id), timeout=20), exit_status)
    await step("state-init-stopped", task.State(v2.StateRequest(id=id)), status)
    await step("kill-init-exited", task.Kill(v2.KillRequest(id=id, signal=9)))
    await step("kill-all-exited", task.Kill(v2.KillRequest(id=id, signal=9, all=True)))
    await step("exec-after-exit", task.Exec(exec_req("e4", SLEEP)))
    await step("start-init-after-exit", task.Start(v2.StartRequest(id=id)))
    await step("pause-after-exit", task.Pause(v2.PauseRequest(id=id)))
    await step("delete-init", task.Delete(v2.DeleteRequest(id=id)), exit_status)
    await step("delete-init-again", task.Delete(v2.DeleteRequest(id=id)))
    await step("state-deleted", task.State(v2.StateRequest(id=id)))
    await step("wait-deleted", task.Wait(v2.WaitRequest(id=id), timeout=5))
    await task.Shutdown(v2.ShutdownRequest(id=id))
    await wait_gone(shim_pid)
    return out


async def test_task_api_edge_cases_match_the_go_shim(shim_env: ShimEnv) -> None:
    sockets: list[str] = []
    log_fds: list[int] = []
    try:
        go = await scenario(shim_env, "go", sockets, log_fds)
        arun = await scenario(shim_env, "arun", sockets, log_fds)
    finally:
        for pid in list(shim_env.shim_pids):  # a shim left by a failed step is killed first
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for fd in log_fds:
            with contextlib.suppress(OSError):
                print(os.read(fd, 1 << 16).decode(errors="replace"))  # the Go shim's log, for failures
            os.close(fd)
        for path in sockets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    diffs = {g[0]: (g[1], a[1]) for g, a in zip(go, arun, strict=True) if g != a}
    # Where arun answers differently on purpose: a refused state transition is a
    # FailedPrecondition (the Go shim's plain errors reach the client as Unknown), an unknown exec
    # id in CloseIO is NotFound, and deleting an exec that never ran reports 255 (its waiters are
    # released with it; the Go shim leaves them blocked and reports 0).
    refused = ("UnknownError", "FailedPreconditionError")
    expected = {
        "start-init-again": refused,
        "start-e1-again": refused,
        "delete-e3-running": refused,
        "pause-again": refused,
        "resume-again": refused,
        "delete-init-running": refused,
        "exec-after-exit": refused,
        "start-init-after-exit": refused,
        "pause-after-exit": refused,
        "closeio-unknown-exec": ("UnknownError", "NotFoundError"),
        "delete-e1-never-started": (0, 255),
        "delete-e2-created": (0, 255),
    }
    assert diffs == expected, "\n".join(
        f"{step}: go {g!r}, arun {a!r}" for step, (g, a) in diffs.items() if expected.get(step) != (g, a)
    )
    # What the reference does, so a change on both sides is noticed too.
    got = dict(arun)
    assert (got["wait-e1"], got["wait-e1-after-exit"], got["wait-e3"], got["wait-init"]) == (3, 3, 143, 137)
    assert got["memory-limit"] == str(64 << 20) and got["cpu-shares"] == "256"
    assert got["kill-init-exited"] == "NotFoundError" and got["delete-init-again"] == "NotFoundError"
    assert got["exec-e1-again"] == "AlreadyExistsError" and got["state-unknown-exec"] == "NotFoundError"
    assert got["stats"] == (
        "io.containerd.cgroups.v1.Metrics",
        ["blkio", "cpu", "memory", "memory_oom_control", "pids"],
    )
