"""An in-process shim for the task manager's unit tests: a ttrpc server speaking the Task API
(v3, or v2 only) over a temporary unix socket, with tasks that exist only in memory."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, empty_pb2

from arun.api.containerd.runtime.task.v2 import shim_pb2 as task_v2
from arun.api.containerd.runtime.task.v3 import shim_pb2 as task_v3
from arun.core.runtime import Exit
from arun.errdefs import FailedPreconditionError, NotFoundError, UnimplementedError
from arun.errdefs import grpc as errgrpc
from arun.runtime.binary import BootstrapResult, ShimBinary, ShimEnv
from arun.runtime.bundle import Bundle
from arun.runtime.manager import ShimManager
from arun.ttrpc import Server


@dataclass
class FakeProcess:
    pid: int
    status: int = 1  # CREATED
    exit_status: int = 0
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    exited_at: datetime | None = None

    def exit(self, status: int) -> None:
        self.status = 3
        self.exit_status = status
        self.exited_at = datetime.now(UTC)
        self.exited.set()


@dataclass
class FakeTask:
    id: str
    bundle: str
    init: FakeProcess
    execs: dict[str, FakeProcess] = field(default_factory=dict)


class FakeTaskService:
    def __init__(self, shim: FakeShim, pb: Any) -> None:
        self.shim = shim
        self.pb = pb

    def _task(self, id: str) -> FakeTask:
        t = self.shim.tasks.get(id)
        if t is None:
            raise NotFoundError(f"task {id!r} not found")
        return t

    def _proc(self, id: str, exec_id: str) -> FakeProcess:
        t = self._task(id)
        if not exec_id:
            return t.init
        p = t.execs.get(exec_id)
        if p is None:
            raise NotFoundError(f"exec {exec_id!r} not found")
        return p

    async def Create(self, r: Any) -> Any:
        self.shim.calls.append(("Create", r))
        if self.shim.fail_create:
            raise FailedPreconditionError("runc create failed: boom")
        if r.id in self.shim.tasks:
            raise FailedPreconditionError(f"task {r.id} exists")
        self.shim.next_pid += 1
        self.shim.tasks[r.id] = FakeTask(r.id, r.bundle, FakeProcess(self.shim.next_pid))
        return self.pb.CreateTaskResponse(pid=self.shim.next_pid)

    async def Start(self, r: Any) -> Any:
        self.shim.calls.append(("Start", r))
        p = self._proc(r.id, r.exec_id)
        p.status = 2
        return self.pb.StartResponse(pid=p.pid)

    async def State(self, r: Any) -> Any:
        t = self._task(r.id)
        p = self._proc(r.id, r.exec_id)
        resp = self.pb.StateResponse(
            id=r.exec_id or r.id,
            bundle=t.bundle,
            pid=p.pid,
            status=p.status,
            exit_status=p.exit_status,
            exec_id=r.exec_id,
        )
        if p.exited_at is not None:
            resp.exited_at.FromDatetime(p.exited_at)
        return resp

    async def Kill(self, r: Any) -> Any:
        self.shim.calls.append(("Kill", r))
        p = self._proc(r.id, r.exec_id)
        p.exit(128 + r.signal)
        return empty_pb2.Empty()

    async def Wait(self, r: Any) -> Any:
        p = self._proc(r.id, r.exec_id)
        await p.exited.wait()
        resp = self.pb.WaitResponse(exit_status=p.exit_status)
        assert p.exited_at is not None
        resp.exited_at.FromDatetime(p.exited_at)
        return resp

    async def Delete(self, r: Any) -> Any:
        self.shim.calls.append(("Delete", r))
        t = self._task(r.id)
        if r.exec_id:
            p = t.execs.pop(r.exec_id, None)
            if p is None:
                raise NotFoundError(f"exec {r.exec_id!r} not found")
        else:
            p = t.init
            if p.status == 2:
                raise FailedPreconditionError("cannot delete a running task")
            del self.shim.tasks[r.id]
        resp = self.pb.DeleteResponse(pid=p.pid, exit_status=p.exit_status)
        if p.exited_at is not None:
            resp.exited_at.FromDatetime(p.exited_at)
        return resp

    async def Exec(self, r: Any) -> Any:
        self.shim.calls.append(("Exec", r))
        t = self._task(r.id)
        self.shim.next_pid += 1
        t.execs[r.exec_id] = FakeProcess(self.shim.next_pid)
        return empty_pb2.Empty()

    async def Pids(self, r: Any) -> Any:
        t = self._task(r.id)
        resp = self.pb.PidsResponse()
        resp.processes.add(pid=t.init.pid)
        for exec_id, p in t.execs.items():
            info = resp.processes.add(pid=p.pid)
            info.info.type_url = "containerd.runc.v1.ProcessDetails"
            info.info.value = exec_id.encode()
        return resp

    async def Pause(self, r: Any) -> Any:
        self._task(r.id).init.status = 4
        return empty_pb2.Empty()

    async def Resume(self, r: Any) -> Any:
        self._task(r.id).init.status = 2
        return empty_pb2.Empty()

    async def Checkpoint(self, r: Any) -> Any:
        raise UnimplementedError("checkpoint not supported")

    async def ResizePty(self, r: Any) -> Any:
        self.shim.calls.append(("ResizePty", r))
        return empty_pb2.Empty()

    async def CloseIO(self, r: Any) -> Any:
        self.shim.calls.append(("CloseIO", r))
        return empty_pb2.Empty()

    async def Update(self, r: Any) -> Any:
        self.shim.calls.append(("Update", r))
        return empty_pb2.Empty()

    async def Stats(self, r: Any) -> Any:
        self._task(r.id)
        return self.pb.StatsResponse(
            stats=any_pb2.Any(type_url="io.containerd.cgroups.v1.Metrics", value=b"")
        )

    async def Connect(self, r: Any) -> Any:
        self.shim.calls.append(("Connect", r))
        if self.shim.hang_connect:
            await asyncio.sleep(3600)
        t = self.shim.tasks.get(r.id)
        return self.pb.ConnectResponse(shim_pid=os.getpid(), task_pid=t.init.pid if t else 0)

    async def Shutdown(self, r: Any) -> Any:
        self.shim.calls.append(("Shutdown", r))
        if not self.shim.tasks:
            asyncio.get_running_loop().call_soon(self.shim.die)
        return empty_pb2.Empty()


def _to_status(exc: BaseException) -> tuple[int, str]:
    return errgrpc.code_of(exc), errgrpc.message_of(exc)


class FakeShim:
    """One fake shim process: a ttrpc server on ``path``."""

    def __init__(self, path: Path, *, versions: Iterable[int] = (3, 2)) -> None:
        self.path = path
        self.versions = tuple(versions)
        self.tasks: dict[str, FakeTask] = {}
        self.calls: list[tuple[str, Any]] = []
        self.next_pid = 1000
        self.fail_create = False
        self.hang_connect = False
        self.server: Server | None = None
        self.dead = False

    async def start(self) -> None:
        self.server = Server(to_status=_to_status)
        for v, pb in ((3, task_v3), (2, task_v2)):
            if v in self.versions:
                self.server.register(pb.DESCRIPTOR.services_by_name["Task"], FakeTaskService(self, pb))
        await self.server.serve_unix(str(self.path))

    def die(self) -> None:
        """Go away like a killed process: connections drop, the socket refuses."""
        if self.server is not None and not self.dead:
            self.dead = True
            asyncio.get_running_loop().create_task(self.server.close())
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def called(self, method: str) -> list[Any]:
        return [r for m, r in self.calls if m == method]


class FakeShimManager(ShimManager):
    """Starts FakeShims instead of binaries; groups tasks by the sandbox-id annotation."""

    def __init__(self, sockets: Path, *, versions: Iterable[int] = (3, 2), result_version: int = 3) -> None:
        super().__init__(ShimEnv(grpc_address="/fake/grpc.sock", ttrpc_address="/fake/ttrpc.sock"))
        self.sockets = sockets
        self.versions = tuple(versions)
        self.result_version = result_version
        self.shims: dict[str, FakeShim] = {}
        self.deleted: list[tuple[str, str]] = []
        self.delete_exit: Exit | None = Exit(0, 137, datetime.now(UTC))
        self.fail_start = False

    def resolve(self, runtime: str) -> ShimBinary:
        return ShimBinary(runtime, ("/fake/containerd-shim-fake-v1",))

    async def start(self, shim: ShimBinary, bundle: Bundle, options: Any) -> BootstrapResult:
        if self.fail_start:
            raise FailedPreconditionError("shim start failed: no such runtime")
        spec = json.loads((bundle.path / "config.json").read_text())
        group = spec.get("annotations", {}).get("io.kubernetes.cri.sandbox-id") or bundle.id
        key = f"{bundle.namespace}-{group}"
        fake = self.shims.get(key)
        if fake is None or fake.dead:
            fake = FakeShim(self.sockets / key, versions=self.versions)
            await fake.start()
            self.shims[key] = fake
        return BootstrapResult(self.result_version, "unix://" + str(fake.path), "ttrpc")

    async def delete(self, shim: ShimBinary, bundle: Bundle) -> Exit:
        self.deleted.append((bundle.namespace, bundle.id))
        if self.delete_exit is None:
            raise FailedPreconditionError("delete binary failed")
        return self.delete_exit

    def shim_of(self, namespace: str, group: str) -> FakeShim:
        return self.shims[f"{namespace}-{group}"]

    async def close(self) -> None:
        for s in self.shims.values():
            if s.server is not None:
                await s.server.close()
