"""Lifecycle states of init and exec processes, as explicit state objects.

Each state object answers every operation: either it does the work (through its process) and
moves to the next state, or it refuses with FailedPreconditionError naming the operation and the
state. All moves go through one table, :data:`TRANSITIONS`; a move the table does not allow
raises FailedPreconditionError naming both states.

An operation that awaits (runc) may find, when it resumes, that the process exited meanwhile and
its state object was replaced by ``stopped``. The state that started the operation then leaves the
newer state alone: an exit is a fact, not a request.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, ClassVar

from arun.errdefs import FailedPreconditionError, NotFoundError

if TYPE_CHECKING:
    from arun.shim.process.exec import ExecProcess
    from arun.shim.process.init import Init


class Status(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    STOPPED = "stopped"
    DELETED = "deleted"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATED: frozenset({Status.RUNNING, Status.STOPPED, Status.DELETED}),
    Status.RUNNING: frozenset({Status.PAUSED, Status.STOPPED}),
    Status.PAUSED: frozenset({Status.RUNNING, Status.STOPPED}),
    Status.STOPPED: frozenset({Status.DELETED}),
    Status.DELETED: frozenset(),
}


def check_transition(src: Status, dst: Status) -> None:
    if dst not in TRANSITIONS[src]:
        raise FailedPreconditionError(f"invalid state transition {src.value!r} to {dst.value!r}")


def _refuse(op: str, what: str, state: Status) -> FailedPreconditionError:
    return FailedPreconditionError(f"cannot {op} {what} in {state.value!r} state")


# -- init ----------------------------------------------------------------------------------------


class InitState:
    """Base: every operation refused; subclasses allow what their state allows."""

    status: ClassVar[Status]

    def __init__(self, p: Init) -> None:
        self.p = p

    def transition(self, dst: Status) -> None:
        if self.p.state is not self:
            return  # superseded while awaiting (the process exited); keep the newer state
        check_transition(self.status, dst)
        self.p.state = INIT_STATES[dst](self.p)

    def _no(self, op: str) -> FailedPreconditionError:
        return _refuse(op, f"task {self.p.id!r}", self.status)

    async def start(self) -> None:
        raise self._no("start")

    async def delete(self) -> None:
        raise self._no("delete")

    async def pause(self) -> None:
        raise self._no("pause")

    async def resume(self) -> None:
        raise self._no("resume")

    async def update(self, resources: dict[str, Any]) -> None:
        raise self._no("update")

    async def checkpoint(self, image_path: str, work_path: str, exit: bool) -> None:
        raise self._no("checkpoint")

    def exec_allowed(self) -> None:
        raise self._no("exec in")

    async def kill(self, signal: int, all: bool) -> None:
        await self.p._kill(signal, all)

    def set_exited(self, status: int, timestamp_ns: int) -> None:
        self.p._set_exited(status, timestamp_ns)
        self.transition(Status.STOPPED)


class InitCreated(InitState):
    status = Status.CREATED

    async def start(self) -> None:
        await self.p._start()
        self.transition(Status.RUNNING)

    async def delete(self) -> None:
        await self.p._delete()
        self.transition(Status.DELETED)

    async def update(self, resources: dict[str, Any]) -> None:
        await self.p._update(resources)

    def exec_allowed(self) -> None:
        return None


class InitRunning(InitState):
    status = Status.RUNNING

    async def pause(self) -> None:
        self.p.pausing = True
        try:
            await self.p._pause()
        finally:
            self.p.pausing = False
        self.transition(Status.PAUSED)

    async def update(self, resources: dict[str, Any]) -> None:
        await self.p._update(resources)

    async def checkpoint(self, image_path: str, work_path: str, exit: bool) -> None:
        await self.p._checkpoint(image_path, work_path, exit)

    def exec_allowed(self) -> None:
        return None


class InitPaused(InitState):
    status = Status.PAUSED

    async def resume(self) -> None:
        await self.p._resume()
        self.transition(Status.RUNNING)

    async def update(self, resources: dict[str, Any]) -> None:
        await self.p._update(resources)

    async def checkpoint(self, image_path: str, work_path: str, exit: bool) -> None:
        await self.p._checkpoint(image_path, work_path, exit)

    def set_exited(self, status: int, timestamp_ns: int) -> None:
        super().set_exited(status, timestamp_ns)
        # Thaw the cgroup so whatever is left can die and runc can delete it.
        self.p._resume_after_exit()


class InitStopped(InitState):
    status = Status.STOPPED

    async def delete(self) -> None:
        await self.p._delete()
        self.transition(Status.DELETED)

    def set_exited(self, status: int, timestamp_ns: int) -> None:
        return None  # already recorded


class InitDeleted(InitState):
    status = Status.DELETED

    # A Kill or Delete queued behind the Delete that removed the task finds nothing to act on:
    # NotFound, as containerd says, so that callers treat it like an already-gone task.
    async def kill(self, signal: int, all: bool) -> None:
        raise NotFoundError(f"cannot kill task {self.p.id!r}: it has been deleted")

    async def delete(self) -> None:
        raise NotFoundError(f"cannot delete task {self.p.id!r}: it has been deleted")

    def set_exited(self, status: int, timestamp_ns: int) -> None:
        # Deleted before it ever ran (runc delete killed it): record the exit so that waiters
        # return, without leaving the deleted state.
        if not self.p.exited:
            self.p._set_exited(status, timestamp_ns)


INIT_STATES: dict[Status, type[InitState]] = {
    s.status: s for s in (InitCreated, InitRunning, InitPaused, InitStopped, InitDeleted)
}


# -- exec ----------------------------------------------------------------------------------------


class ExecState:
    status: ClassVar[Status]

    def __init__(self, p: ExecProcess) -> None:
        self.p = p

    def transition(self, dst: Status) -> None:
        if self.p.state is not self:
            return
        if dst is Status.PAUSED:  # an exec is never paused itself; its container is
            raise FailedPreconditionError(f"invalid state transition {self.status.value!r} to {dst.value!r}")
        check_transition(self.status, dst)
        self.p.state = EXEC_STATES[dst](self.p)

    def _no(self, op: str) -> FailedPreconditionError:
        return _refuse(op, f"exec {self.p.id!r}", self.status)

    async def start(self) -> None:
        raise self._no("start")

    async def delete(self) -> None:
        raise self._no("delete")

    async def kill(self, signal: int) -> None:
        raise self._no("kill")

    def resize(self, width: int, height: int) -> None:
        raise self._no("resize")

    def set_exited(self, status: int, timestamp_ns: int) -> None:
        self.p._set_exited(status, timestamp_ns)
        self.transition(Status.STOPPED)


class ExecCreated(ExecState):
    status = Status.CREATED

    async def start(self) -> None:
        await self.p._start()
        self.transition(Status.RUNNING)

    async def delete(self) -> None:
        await self.p._delete()
        self.transition(Status.DELETED)

    async def kill(self, signal: int) -> None:
        await self.p._kill(signal)

    def resize(self, width: int, height: int) -> None:
        self.p._resize(width, height)


class ExecRunning(ExecState):
    status = Status.RUNNING

    async def kill(self, signal: int) -> None:
        await self.p._kill(signal)

    def resize(self, width: int, height: int) -> None:
        self.p._resize(width, height)


class ExecStopped(ExecState):
    status = Status.STOPPED

    async def delete(self) -> None:
        await self.p._delete()
        self.transition(Status.DELETED)

    async def kill(self, signal: int) -> None:
        await self.p._kill(signal)

    def set_exited(self, status: int, timestamp_ns: int) -> None:
        return None


class ExecDeleted(ExecState):
    status = Status.DELETED

    async def kill(self, signal: int) -> None:
        raise NotFoundError(f"cannot kill exec {self.p.id!r}: it has been deleted")

    async def delete(self) -> None:
        raise NotFoundError(f"cannot delete exec {self.p.id!r}: it has been deleted")

    def set_exited(self, status: int, timestamp_ns: int) -> None:
        if not self.p.exited:
            self.p._set_exited(status, timestamp_ns)


EXEC_STATES: dict[Status, type[ExecState]] = {
    s.status: s for s in (ExecCreated, ExecRunning, ExecStopped, ExecDeleted)
}
