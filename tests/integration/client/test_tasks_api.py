"""The tasks service's less travelled calls (Update, Metrics, ListPids, CloseIO, ResizePty,
DeleteProcess, Get of an exec) through the raw gRPC API, against containerd 1.6 and arun with the
same expectations: whatever containerd answers, arun must answer too."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from arun import errdefs
from arun.client import Client

pytestmark = [
    pytest.mark.root,
    pytest.mark.runc,
    pytest.mark.containerd,
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="package"),
]

SERVICE = "/containerd.services.tasks.v1.Tasks/"
RESOURCES = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


def memory_cgroup(pid: int) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    raise AssertionError(f"no memory cgroup for {pid}")


async def call(c: Client, method: str, req: Any, resp: Any) -> Any:
    return await c._unary(SERVICE + method, req, resp)


async def outcome(c: Client, method: str, req: Any, resp: Any) -> str:
    try:
        await call(c, method, req, resp)
    except errdefs.ArunError as e:
        return type(e).__name__
    return "ok"


@pytest.mark.needs_tasks
async def test_update_metrics_pids_and_process_calls(client: Client, busybox: str) -> None:
    from google.protobuf import empty_pb2

    from arun.api.cgroups.v1 import metrics_pb2
    from arun.api.containerd.services.tasks.v1 import tasks_pb2
    from arun.api.containerd.types.runc.options import oci_pb2
    from arun.api.containerd.types.task import task_pb2 as task_types

    ctr = await client.containers.create("c-" + os.urandom(4).hex(), busybox, command=["sleep", "1000"])
    task = await ctr.new_task()
    await task.start()
    id = ctr.id
    try:
        # Update: the cgroup follows.
        req = tasks_pb2.UpdateTaskRequest(container_id=id)
        req.resources.type_url = RESOURCES
        req.resources.value = json.dumps({"memory": {"limit": 48 << 20}}).encode()
        await call(client, "Update", req, empty_pb2.Empty)
        assert (memory_cgroup(task.pid) / "memory.limit_in_bytes").read_text().strip() == str(48 << 20)
        # Metrics of this task only, in containerd's v1 type.
        m = await call(
            client, "Metrics", tasks_pb2.MetricsRequest(filters=[f"id=={id}"]), tasks_pb2.MetricsResponse
        )
        assert [x.id for x in m.metrics] == [id]
        assert m.metrics[0].data.type_url == "io.containerd.cgroups.v1.Metrics"
        data = metrics_pb2.Metrics.FromString(m.metrics[0].data.value)
        assert data.memory.usage.limit == 48 << 20 and data.pids.current >= 1
        assert {"blkio", "cpu", "memory", "pids"} <= {f.name for f, _ in data.ListFields()}
        # ListPids names exec processes by exec id.
        p = await task.exec("e1", ["sleep", "1000"])
        pids = await call(
            client, "ListPids", tasks_pb2.ListPidsRequest(container_id=id), tasks_pb2.ListPidsResponse
        )
        by_pid = {x.pid: x for x in pids.processes}
        assert {task.pid, p.pid} <= set(by_pid)
        assert oci_pb2.ProcessDetails.FromString(by_pid[p.pid].info.value).exec_id == "e1"
        # Calls naming processes that are not there, or in the wrong state.
        got = {
            "get-unknown-exec": await outcome(
                client, "Get", tasks_pb2.GetRequest(container_id=id, exec_id="nope"), tasks_pb2.GetResponse
            ),
            "closeio-no-stdin": await outcome(
                client, "CloseIO", tasks_pb2.CloseIORequest(container_id=id, stdin=True), empty_pb2.Empty
            ),
            "resize-no-terminal": await outcome(
                client, "ResizePty", tasks_pb2.ResizePtyRequest(container_id=id, width=80, height=24),
                empty_pb2.Empty,
            ),
            "delete-process-unknown": await outcome(
                client, "DeleteProcess", tasks_pb2.DeleteProcessRequest(container_id=id, exec_id="nope"),
                tasks_pb2.DeleteResponse,
            ),
            "delete-process-running": await outcome(
                client, "DeleteProcess", tasks_pb2.DeleteProcessRequest(container_id=id, exec_id="e1"),
                tasks_pb2.DeleteResponse,
            ),
            "update-unknown-task": await outcome(
                client, "Update", tasks_pb2.UpdateTaskRequest(container_id="nope"), empty_pb2.Empty
            ),
            "pids-unknown-task": await outcome(
                client, "ListPids", tasks_pb2.ListPidsRequest(container_id="nope"), tasks_pb2.ListPidsResponse
            ),
        }  # fmt: skip
        got["delete-running-task"] = await outcome(
            client, "Delete", tasks_pb2.DeleteTaskRequest(container_id=id), tasks_pb2.DeleteResponse
        )
        state = await call(client, "Get", tasks_pb2.GetRequest(container_id=id), tasks_pb2.GetResponse)
        assert state.process.pid == task.pid and state.process.status == task_types.RUNNING
        await p.kill(9)
        assert (await p.wait()).code == 137
        got["delete-process-exited"] = await outcome(
            client, "DeleteProcess", tasks_pb2.DeleteProcessRequest(container_id=id, exec_id="e1"),
            tasks_pb2.DeleteResponse,
        )  # fmt: skip
        got["get-deleted-exec"] = await outcome(
            client, "Get", tasks_pb2.GetRequest(container_id=id, exec_id="e1"), tasks_pb2.GetResponse
        )
        assert got == {
            "get-unknown-exec": "NotFoundError",
            "closeio-no-stdin": "ok",
            "resize-no-terminal": "ok",
            "delete-process-unknown": "NotFoundError",
            "delete-process-running": got["delete-process-running"],
            "delete-running-task": got["delete-running-task"],
            "update-unknown-task": "NotFoundError",
            "pids-unknown-task": "NotFoundError",
            "delete-process-exited": "ok",
            "get-deleted-exec": "NotFoundError",
        }
        # containerd passes the Go shim's plain error on (Unknown); arun says FailedPrecondition.
        assert got["delete-process-running"] in ("UnknownError", "FailedPreconditionError")
        assert got["delete-running-task"] in ("UnknownError", "FailedPreconditionError")
    finally:
        await task.delete(force=True)
        await ctr.delete()
