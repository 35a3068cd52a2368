"""The tasks service: containerd's ``Tasks`` API over the runtime v2 task manager.

As in containerd, the service works with protobuf requests and replies (its
in-process users — the gRPC servicer — speak them anyway; the CRI plugin calls
the task runtime, ``core.runtime.TaskRuntime``, directly). Every call first
looks up the container record: a task exists only for a container of the
current namespace.

Task events are not published here: the shims publish ``/tasks/create``,
``/tasks/start``, ``/tasks/exit`` … themselves (forwarded through the daemon's
ttrpc socket onto the exchange), and the task manager publishes the exit of a
task whose shim died.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from arun import filters, namespaces
from arun.api.containerd.services.tasks.v1 import tasks_pb2
from arun.api.containerd.types import metrics_pb2
from arun.api.containerd.types.task import task_pb2
from arun.core.containers import Container, ContainerStore
from arun.core.runtime import IO as TaskIO
from arun.core.runtime import (
    AnyValue,
    CreateOpts,
    ExecOpts,
    Exit,
    MountSpec,
    Process,
    State,
    Status,
    Task,
    TaskRuntime,
)
from arun.errdefs import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)

log = logging.getLogger(__name__)

STATE_TIMEOUT = 2.0  # io.containerd.timeout.task.state

_EMPTY = empty_pb2.Empty()


# Mounts of a snapshot: (snapshotter name, key) -> mounts (for a task created without rootfs).
SnapshotMounts = Callable[[str, str], Awaitable[Sequence[MountSpec]]]


def timestamp(dt: datetime | None) -> timestamp_pb2.Timestamp | None:
    if dt is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt.astimezone(UTC))
    return ts


def any_pb(v: AnyValue | None) -> any_pb2.Any | None:
    return None if v is None else any_pb2.Any(type_url=v.type_url, value=v.value)


def process_pb(container_id: str, state: State) -> task_pb2.Process:
    return task_pb2.Process(
        container_id=container_id,
        id=state.exec_id or state.id or container_id,
        pid=state.pid,
        status=int(state.status),  # type: ignore[arg-type]
        stdin=state.stdin,
        stdout=state.stdout,
        stderr=state.stderr,
        terminal=state.terminal,
        exit_status=state.exit_status,
        exited_at=timestamp(state.exited_at),
    )


def delete_pb(id: str, exit: Exit) -> tasks_pb2.DeleteResponse:
    return tasks_pb2.DeleteResponse(
        id=id, pid=exit.pid, exit_status=exit.status, exited_at=timestamp(exit.timestamp)
    )


class TasksLocal:
    def __init__(
        self,
        runtime: TaskRuntime,
        containers: ContainerStore,
        snapshot_mounts: SnapshotMounts | None = None,
    ) -> None:
        self.runtime = runtime
        self.containers = containers
        self.snapshot_mounts = snapshot_mounts

    # -- lookups -------------------------------------------------------------------------------

    async def _container(self, id: str) -> Container:
        if not id:
            raise InvalidArgumentError("container id must not be empty")
        return await self.containers.get(id)

    async def _task(self, container_id: str) -> Task:
        await self._container(container_id)
        try:
            return await self.runtime.get(container_id)
        except NotFoundError:
            raise NotFoundError(f"task {container_id} not found") from None

    async def _process(self, container_id: str, exec_id: str) -> tuple[Task, Process]:
        task = await self._task(container_id)
        if not exec_id:
            return task, task
        return task, await task.process(exec_id)

    # -- API -----------------------------------------------------------------------------------

    async def create(self, r: tasks_pb2.CreateTaskRequest) -> tasks_pb2.CreateTaskResponse:
        container = await self._container(r.container_id)
        if r.HasField("checkpoint") and r.checkpoint.digest:
            raise UnimplementedError("restoring a task from a checkpoint is not supported by arun")
        spec = container.spec
        if spec is None or not spec.value:
            raise FailedPreconditionError(f"container {r.container_id!r} has no OCI spec")
        runtime_info = container.runtime
        rootfs: Sequence[MountSpec] = list(r.rootfs)
        if not rootfs and container.snapshot_key and self.snapshot_mounts is not None:
            rootfs = await self.snapshot_mounts(container.snapshotter, container.snapshot_key)
        opts = CreateOpts(
            spec=bytes(spec.value),
            rootfs=rootfs,
            io=TaskIO(stdin=r.stdin, stdout=r.stdout, stderr=r.stderr, terminal=r.terminal),
            runtime=r.runtime_path or runtime_info.name,
            runtime_options=runtime_info.options,
            task_options=r.options if r.HasField("options") else None,
        )
        task = await self.runtime.create(r.container_id, opts)
        return tasks_pb2.CreateTaskResponse(container_id=r.container_id, pid=await _pid(task))

    async def start(self, r: tasks_pb2.StartRequest) -> tasks_pb2.StartResponse:
        _, p = await self._process(r.container_id, r.exec_id)
        pid = await p.start()
        return tasks_pb2.StartResponse(pid=pid)

    async def delete(self, r: tasks_pb2.DeleteTaskRequest) -> tasks_pb2.DeleteResponse:
        await self._task(r.container_id)
        exit = await self.runtime.delete(r.container_id)
        return delete_pb("", exit)

    async def delete_process(self, r: tasks_pb2.DeleteProcessRequest) -> tasks_pb2.DeleteResponse:
        if not r.exec_id:
            raise InvalidArgumentError("exec id must not be empty")
        task = await self._task(r.container_id)
        p = await task.process(r.exec_id)
        exit = await p.delete()
        return delete_pb(r.exec_id, exit)

    async def get(self, r: tasks_pb2.GetRequest) -> tasks_pb2.GetResponse:
        _, p = await self._process(r.container_id, r.exec_id)
        state = await _state(p)
        return tasks_pb2.GetResponse(process=process_pb(r.container_id, state))

    async def list(self, r: tasks_pb2.ListTasksRequest) -> tasks_pb2.ListTasksResponse:
        resp = tasks_pb2.ListTasksResponse()
        tasks = await self.runtime.tasks()
        states = await asyncio.gather(*(_state(t) for t in tasks), return_exceptions=True)
        for t, st in zip(tasks, states, strict=True):
            if isinstance(st, BaseException):
                if not isinstance(st, NotFoundError):
                    log.warning("state of task failed", extra={"id": t.id, "error": str(st)})
                continue
            resp.tasks.append(process_pb(t.id, st))
        return resp

    async def kill(self, r: tasks_pb2.KillRequest) -> empty_pb2.Empty:
        _, p = await self._process(r.container_id, r.exec_id)
        await p.kill(r.signal, r.all)
        return _EMPTY

    async def exec(self, r: tasks_pb2.ExecProcessRequest) -> empty_pb2.Empty:
        if not r.exec_id:
            raise InvalidArgumentError("exec id cannot be empty")
        task = await self._task(r.container_id)
        if not r.HasField("spec"):
            raise InvalidArgumentError("exec process spec must be set")
        io = TaskIO(stdin=r.stdin, stdout=r.stdout, stderr=r.stderr, terminal=r.terminal)
        await task.exec(r.exec_id, ExecOpts(spec=r.spec, io=io))
        return _EMPTY

    async def resize_pty(self, r: tasks_pb2.ResizePtyRequest) -> empty_pb2.Empty:
        _, p = await self._process(r.container_id, r.exec_id)
        await p.resize_pty(r.width, r.height)
        return _EMPTY

    async def close_io(self, r: tasks_pb2.CloseIORequest) -> empty_pb2.Empty:
        _, p = await self._process(r.container_id, r.exec_id)
        if r.stdin:
            await p.close_io()
        return _EMPTY

    async def pause(self, r: tasks_pb2.PauseTaskRequest) -> empty_pb2.Empty:
        await (await self._task(r.container_id)).pause()
        return _EMPTY

    async def resume(self, r: tasks_pb2.ResumeTaskRequest) -> empty_pb2.Empty:
        await (await self._task(r.container_id)).resume()
        return _EMPTY

    async def list_pids(self, r: tasks_pb2.ListPidsRequest) -> tasks_pb2.ListPidsResponse:
        task = await self._task(r.container_id)
        resp = tasks_pb2.ListPidsResponse()
        for p in await task.pids():
            info = resp.processes.add(pid=p.pid)
            if p.info is not None:
                info.info.type_url = p.info.type_url
                info.info.value = p.info.value
        return resp

    async def checkpoint(self, r: tasks_pb2.CheckpointTaskRequest) -> tasks_pb2.CheckpointTaskResponse:
        await self._task(r.container_id)
        raise UnimplementedError(
            "checkpointing tasks is not supported by arun (no CRIU support, and no checkpoint images)"
        )

    async def update(self, r: tasks_pb2.UpdateTaskRequest) -> empty_pb2.Empty:
        task = await self._task(r.container_id)
        await task.update(r.resources if r.HasField("resources") else None, dict(r.annotations))
        return _EMPTY

    async def metrics(self, r: tasks_pb2.MetricsRequest) -> tasks_pb2.MetricsResponse:
        flt = filters.parse_all(list(r.filters))
        ns = namespaces.required()
        resp = tasks_pb2.MetricsResponse()
        selected: list[Task] = []
        for t in await self.runtime.tasks():
            if flt.match(filters.mapping_adaptor({"id": t.id, "namespace": ns, "runtime": t.runtime})):
                selected.append(t)

        async def one(t: Task) -> metrics_pb2.Metric | None:
            collected = datetime.now(UTC)
            try:
                stats = await t.stats()
            except NotFoundError:
                return None
            except Exception as e:
                log.warning("collecting metrics failed", extra={"id": t.id, "error": str(e)})
                return None
            return metrics_pb2.Metric(timestamp=timestamp(collected), id=t.id, data=any_pb(stats))

        for m in await asyncio.gather(*(one(t) for t in selected)):
            if m is not None:
                resp.metrics.append(m)
        return resp

    async def wait(self, r: tasks_pb2.WaitRequest) -> tasks_pb2.WaitResponse:
        _, p = await self._process(r.container_id, r.exec_id)
        exit = await p.wait()
        return tasks_pb2.WaitResponse(exit_status=exit.status, exited_at=timestamp(exit.timestamp))


async def _pid(task: Task) -> int:
    pid = getattr(task, "init_pid", 0)
    if isinstance(pid, int) and pid:
        return pid
    return await task.pid()


async def _state(p: Process) -> State:
    """The process's state; UNKNOWN (logged) when the shim does not answer in time."""
    try:
        async with asyncio.timeout(STATE_TIMEOUT):
            return await p.state()
    except NotFoundError:
        raise
    except Exception as e:
        log.warning("state of process failed", extra={"id": p.id, "error": repr(e)})
        return State(id=p.id, exec_id="", pid=0, status=Status.UNKNOWN)
