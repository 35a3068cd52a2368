"""The tasks service over the real task manager with in-process fake shims."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2

from arun import namespaces
from arun.api.containerd.services.tasks.v1 import tasks_pb2
from arun.api.containerd.types.task import task_pb2
from arun.core.runtime import PROCESS_TYPE_URL, SPEC_TYPE_URL
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from arun.runtime.manager import TaskManager
from arun.services.tasks.local import TasksLocal
from tests.unit.runtime.fakeshim import FakeShimManager

NS = "ns1"


@dataclass
class Runtime:
    name: str = "io.containerd.fake.v1"
    options: Any = None


@dataclass
class Container:
    id: str
    spec: Any
    runtime: Runtime = field(default_factory=Runtime)
    snapshotter: str = ""
    snapshot_key: str = ""


class Containers:
    def __init__(self) -> None:
        self.by_ns: dict[tuple[str, str], Container] = {}

    def add(self, c: Container) -> None:
        self.by_ns[(namespaces.required(), c.id)] = c

    async def get(self, id: str) -> Container:
        c = self.by_ns.get((namespaces.required(), id))
        if c is None:
            raise NotFoundError(f"container {id!r}: not found")
        return c


class Env:
    def __init__(self, base: Path) -> None:
        (base / "sockets").mkdir()
        self.shims = FakeShimManager(base / "sockets")
        self.runtime = TaskManager(base / "root", base / "state", self.shims)
        self.containers = Containers()
        self.mounts_asked: list[tuple[str, str]] = []
        self.local = TasksLocal(self.runtime, self.containers, self.snapshot_mounts)

    async def snapshot_mounts(self, snapshotter: str, key: str) -> list[Any]:
        from arun.api.containerd.types import mount_pb2

        self.mounts_asked.append((snapshotter, key))
        return [mount_pb2.Mount(type="bind", source=f"/snap/{key}", options=["rbind", "rw"])]

    def container(self, id: str, **kw: Any) -> Container:
        spec = any_pb2.Any(type_url=SPEC_TYPE_URL, value=json.dumps({"ociVersion": "1.1.0"}).encode())
        c = Container(id, spec, **kw)
        self.containers.add(c)
        return c


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="ts", dir="/tmp"))
    e = Env(base)
    try:
        with namespaces.use(NS):
            yield e
    finally:
        await e.runtime.close()
        await e.shims.close()
        shutil.rmtree(base, ignore_errors=True)


async def test_create_start_get_list_kill_wait_delete(env: Env) -> None:
    env.container("c1")
    opts = any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"\x32\x04crun")
    created = await env.local.create(
        tasks_pb2.CreateTaskRequest(container_id="c1", stdout="/fifo/out", terminal=True, options=opts)
    )
    assert created.container_id == "c1" and created.pid == 1001
    req = env.shims.shim_of(NS, "c1").called("Create")[0]
    assert (req.stdout, req.terminal, req.options.value) == ("/fifo/out", True, b"\x32\x04crun")
    assert (await env.local.start(tasks_pb2.StartRequest(container_id="c1"))).pid == 1001
    got = await env.local.get(tasks_pb2.GetRequest(container_id="c1"))
    assert (got.process.id, got.process.pid, got.process.status) == ("c1", 1001, task_pb2.RUNNING)
    listed = await env.local.list(tasks_pb2.ListTasksRequest())
    assert [(t.id, t.status) for t in listed.tasks] == [("c1", task_pb2.RUNNING)]
    await env.local.kill(tasks_pb2.KillRequest(container_id="c1", signal=9))
    waited = await env.local.wait(tasks_pb2.WaitRequest(container_id="c1"))
    assert waited.exit_status == 137 and waited.HasField("exited_at")
    deleted = await env.local.delete(tasks_pb2.DeleteTaskRequest(container_id="c1"))
    assert (deleted.pid, deleted.exit_status) == (1001, 137)
    assert (await env.local.list(tasks_pb2.ListTasksRequest())).tasks == []


async def test_runtime_path_and_rootfs(env: Env) -> None:
    env.container("c1", snapshotter="overlayfs", snapshot_key="c1-snap")
    await env.local.create(tasks_pb2.CreateTaskRequest(container_id="c1"))
    # No rootfs in the request: the container's snapshot is mounted.
    assert env.mounts_asked == [("overlayfs", "c1-snap")]
    req = env.shims.shim_of(NS, "c1").called("Create")[0]
    assert [(m.type, m.source) for m in req.rootfs] == [("bind", "/snap/c1-snap")]
    # Rootfs given by the client (ctr sends them) wins; runtime_path overrides the name.
    env.container("c2", snapshotter="overlayfs", snapshot_key="c2-snap")
    r = tasks_pb2.CreateTaskRequest(container_id="c2", runtime_path="/opt/shims/containerd-shim-x-v1")
    r.rootfs.add(type="overlay", source="overlay", options=["lowerdir=/a"])
    await env.local.create(r)
    assert env.mounts_asked == [("overlayfs", "c1-snap")]
    assert (await env.runtime.get("c2")).runtime == "/opt/shims/containerd-shim-x-v1"


async def test_errors(env: Env) -> None:
    with pytest.raises(NotFoundError):
        await env.local.create(tasks_pb2.CreateTaskRequest(container_id="nope"))
    with pytest.raises(InvalidArgumentError):
        await env.local.create(tasks_pb2.CreateTaskRequest(container_id=""))
    env.container("c1")
    with pytest.raises(NotFoundError, match="task c1 not found"):
        await env.local.start(tasks_pb2.StartRequest(container_id="c1"))
    await env.local.create(tasks_pb2.CreateTaskRequest(container_id="c1"))
    with pytest.raises(AlreadyExistsError):
        await env.local.create(tasks_pb2.CreateTaskRequest(container_id="c1"))
    with pytest.raises(InvalidArgumentError, match="exec id"):
        await env.local.exec(tasks_pb2.ExecProcessRequest(container_id="c1"))
    with pytest.raises(UnimplementedError, match="not supported"):
        await env.local.checkpoint(tasks_pb2.CheckpointTaskRequest(container_id="c1"))
    r = tasks_pb2.CreateTaskRequest(container_id="c1")
    r.checkpoint.digest = "sha256:" + "0" * 64
    env.container("c2")
    with pytest.raises(UnimplementedError):
        await env.local.create(tasks_pb2.CreateTaskRequest(container_id="c2", checkpoint=r.checkpoint))
    nospec = Container("c3", None)
    env.containers.add(nospec)
    with pytest.raises(FailedPreconditionError, match="no OCI spec"):
        await env.local.create(tasks_pb2.CreateTaskRequest(container_id="c3"))
    # Another namespace sees neither the container nor the task.
    with namespaces.use("other"), pytest.raises(NotFoundError):
        await env.local.get(tasks_pb2.GetRequest(container_id="c1"))


async def test_exec_processes(env: Env) -> None:
    env.container("c1")
    await env.local.create(tasks_pb2.CreateTaskRequest(container_id="c1"))
    await env.local.start(tasks_pb2.StartRequest(container_id="c1"))
    spec = any_pb2.Any(type_url=PROCESS_TYPE_URL, value=b'{"args":["sh"]}')
    await env.local.exec(
        tasks_pb2.ExecProcessRequest(container_id="c1", exec_id="e1", spec=spec, stdin="/fifo/in")
    )
    assert (await env.local.start(tasks_pb2.StartRequest(container_id="c1", exec_id="e1"))).pid == 1002
    got = await env.local.get(tasks_pb2.GetRequest(container_id="c1", exec_id="e1"))
    assert (got.process.id, got.process.pid) == ("e1", 1002)
    pids = await env.local.list_pids(tasks_pb2.ListPidsRequest(container_id="c1"))
    assert [p.pid for p in pids.processes] == [1001, 1002]
    assert pids.processes[1].info.type_url == "containerd.runc.v1.ProcessDetails"
    await env.local.resize_pty(
        tasks_pb2.ResizePtyRequest(container_id="c1", exec_id="e1", width=80, height=24)
    )
    await env.local.close_io(tasks_pb2.CloseIORequest(container_id="c1", exec_id="e1", stdin=True))
    await env.local.close_io(tasks_pb2.CloseIORequest(container_id="c1", exec_id="e1", stdin=False))
    shim = env.shims.shim_of(NS, "c1")
    assert len(shim.called("CloseIO")) == 1
    assert shim.called("ResizePty")[0].width == 80
    await env.local.kill(tasks_pb2.KillRequest(container_id="c1", exec_id="e1", signal=15))
    assert (await env.local.wait(tasks_pb2.WaitRequest(container_id="c1", exec_id="e1"))).exit_status == 143
    deleted = await env.local.delete_process(tasks_pb2.DeleteProcessRequest(container_id="c1", exec_id="e1"))
    assert (deleted.id, deleted.exit_status) == ("e1", 143)
    with pytest.raises(NotFoundError):
        await env.local.get(tasks_pb2.GetRequest(container_id="c1", exec_id="e1"))


async def test_pause_resume_update_metrics(env: Env) -> None:
    for id in ("c1", "c2"):
        env.container(id)
        await env.local.create(tasks_pb2.CreateTaskRequest(container_id=id))
    await env.local.pause(tasks_pb2.PauseTaskRequest(container_id="c1"))
    got = await env.local.get(tasks_pb2.GetRequest(container_id="c1"))
    assert got.process.status == task_pb2.PAUSED
    await env.local.resume(tasks_pb2.ResumeTaskRequest(container_id="c1"))
    res = any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", value=b"{}"
    )
    await env.local.update(
        tasks_pb2.UpdateTaskRequest(container_id="c1", resources=res, annotations={"a": "b"})
    )
    upd = env.shims.shim_of(NS, "c1").called("Update")[0]
    assert upd.resources.type_url.endswith("LinuxResources") and dict(upd.annotations) == {"a": "b"}
    all_metrics = await env.local.metrics(tasks_pb2.MetricsRequest())
    assert sorted(m.id for m in all_metrics.metrics) == ["c1", "c2"]
    assert all(m.data.type_url == "io.containerd.cgroups.v1.Metrics" for m in all_metrics.metrics)
    one = await env.local.metrics(tasks_pb2.MetricsRequest(filters=["id==c2"]))
    assert [m.id for m in one.metrics] == ["c2"]
    with pytest.raises(InvalidArgumentError):
        await env.local.metrics(tasks_pb2.MetricsRequest(filters=["id=="]))
