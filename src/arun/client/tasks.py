"""Tasks (a container's running init process) and the extra processes exec'd into them."""

from __future__ import annotations

import asyncio
import contextlib
import signal as _signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from arun import errdefs
from arun.client import _convert
from arun.client.cio import Input, IOSet, Output
from arun.client.types import ExitStatus, ProcessInfo, TaskState, TaskStatus

if TYPE_CHECKING:
    from arun.client.client import Client

__all__ = ["Process", "Task", "parse_signal"]

_SERVICE = "/containerd.services.tasks.v1.Tasks/"
# How long wait() lets the output FIFOs drain after the process exited.
OUTPUT_GRACE = 5.0


def parse_signal(sig: int | str) -> int:
    """``9``, ``"9"``, ``"KILL"`` or ``"SIGKILL"`` → 9; InvalidArgumentError otherwise."""
    if isinstance(sig, int):
        return sig
    text = sig.strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(_signal.Signals[name])
    except KeyError:
        raise errdefs.InvalidArgumentError(f"unknown signal {sig!r}") from None


class Process:
    """One process of a task: the init process (the task itself) or an exec'd one."""

    def __init__(self, client: Client, container_id: str, exec_id: str, io: IOSet | None, pid: int) -> None:
        self._c = client
        self.container_id = container_id
        self.exec_id = exec_id
        self.io = io
        self.pid = pid
        self._exit: ExitStatus | None = None

    @property
    def id(self) -> str:
        """The process's exec id (the container id for a task's init process)."""
        return self.exec_id or self.container_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r} pid={self.pid}>"

    async def start(self) -> int:
        """Start the process; its pid."""
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        r = await self._c._unary(
            _SERVICE + "Start",
            tasks_pb2.StartRequest(container_id=self.container_id, exec_id=self.exec_id),
            tasks_pb2.StartResponse,
        )
        self.pid = int(r.pid)
        if self.io is not None:
            self.io.started()
        return self.pid

    async def wait(self, *, output_grace: float = OUTPUT_GRACE) -> ExitStatus:
        """Until the process exits; its exit status. Output copied by then has reached its sinks."""
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        r = await self._c._unary(
            _SERVICE + "Wait",
            tasks_pb2.WaitRequest(container_id=self.container_id, exec_id=self.exec_id),
            tasks_pb2.WaitResponse,
            call_timeout=None,
        )
        self._exit = ExitStatus(code=int(r.exit_status), exited_at=_convert.timestamp(r.exited_at))
        if self.io is not None:
            await self.io.wait(output_grace)
        return self._exit

    async def kill(self, sig: int | str = _signal.SIGTERM, *, all: bool = False) -> None:
        """Send ``sig`` to the process (``all``: to every process of the task)."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        await self._c._unary(
            _SERVICE + "Kill",
            tasks_pb2.KillRequest(
                container_id=self.container_id, exec_id=self.exec_id, signal=parse_signal(sig), all=all
            ),
            empty_pb2.Empty,
        )

    async def state(self) -> TaskState:
        """The process's state, pid and exit status as the daemon reports them."""
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        r = await self._c._unary(
            _SERVICE + "Get",
            tasks_pb2.GetRequest(container_id=self.container_id, exec_id=self.exec_id),
            tasks_pb2.GetResponse,
        )
        return _convert.task_state(r.process)

    async def resize(self, width: int, height: int) -> None:
        """Set the size of the process's terminal (``tty=True`` only)."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        await self._c._unary(
            _SERVICE + "ResizePty",
            tasks_pb2.ResizePtyRequest(
                container_id=self.container_id, exec_id=self.exec_id, width=width, height=height
            ),
            empty_pb2.Empty,
        )

    async def close_stdin(self) -> None:
        """Finish writing stdin, then close it so the process reads EOF."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        if self.io is not None:
            await self.io.wait_stdin()
            self.io.close_stdin()
        await self._c._unary(
            _SERVICE + "CloseIO",
            tasks_pb2.CloseIORequest(container_id=self.container_id, exec_id=self.exec_id, stdin=True),
            empty_pb2.Empty,
        )

    async def delete(self) -> ExitStatus:
        """Remove the exited process from the daemon; FailedPreconditionError while it runs."""
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        await self._check_stopped(allow_created=True)
        try:
            r = await self._c._unary(
                _SERVICE + "DeleteProcess",
                tasks_pb2.DeleteProcessRequest(container_id=self.container_id, exec_id=self.exec_id),
                tasks_pb2.DeleteResponse,
            )
        finally:
            self._close_io()
        return ExitStatus(code=int(r.exit_status), exited_at=_convert.timestamp(r.exited_at))

    async def _check_stopped(self, *, allow_created: bool) -> None:
        # Checked client-side, as containerd's Go client does: its shims answer UNKNOWN otherwise.
        st = (await self.state()).status
        ok = {TaskStatus.STOPPED, TaskStatus.UNKNOWN} | ({TaskStatus.CREATED} if allow_created else set())
        if st not in ok:
            raise errdefs.FailedPreconditionError(
                f"process {self.id!r} must be stopped before deletion: {st}"
            )

    def _close_io(self) -> None:
        if self.io is not None:
            self.io.close()


class Task(Process):
    """A container's task: its init process, plus exec, pause/resume and the rest."""

    def __init__(
        self, client: Client, container_id: str, io: IOSet | None, pid: int, spec: Mapping[str, Any]
    ):
        super().__init__(client, container_id, "", io, pid)
        self._spec = spec

    async def status(self) -> TaskStatus:
        """The task's status: created, running, stopped, paused, ..."""
        return (await self.state()).status

    async def pause(self) -> None:
        """Freeze every process of the task (cgroup freezer)."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        await self._c._unary(
            _SERVICE + "Pause", tasks_pb2.PauseTaskRequest(container_id=self.container_id), empty_pb2.Empty
        )

    async def resume(self) -> None:
        """Thaw a paused task."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        await self._c._unary(
            _SERVICE + "Resume", tasks_pb2.ResumeTaskRequest(container_id=self.container_id), empty_pb2.Empty
        )

    async def pids(self) -> list[ProcessInfo]:
        """The processes of the task (its container's), by pid."""
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        r = await self._c._unary(
            _SERVICE + "ListPids",
            tasks_pb2.ListPidsRequest(container_id=self.container_id),
            tasks_pb2.ListPidsResponse,
        )
        return [ProcessInfo(pid=int(p.pid)) for p in r.processes]

    async def exec(
        self,
        exec_id: str,
        args: Sequence[str],
        *,
        env: Sequence[str] | None = None,
        cwd: str | None = None,
        user: tuple[int, int] | None = None,
        terminal: bool = False,
        stdin: Input = None,
        stdout: Output = None,
        stderr: Output = None,
        start: bool = True,
    ) -> Process:
        """Run ``args`` in the task's container; a started Process (``start=False``: created only).

        The process spec starts from the task's own (env, cwd, user, capabilities)
        as ``ctr tasks exec`` does; ``env`` entries are added over it.
        """
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.tasks.v1 import tasks_pb2
        from arun.oci import spec as ocispec

        if not args:
            raise errdefs.InvalidArgumentError("exec: no command given")
        proc: dict[str, Any] = dict(self._spec.get("process") or {})
        proc["args"] = list(args)
        proc["terminal"] = terminal
        if env:
            proc["env"] = ocispec.merge_env(list(proc.get("env") or []), env)
        if cwd:
            proc["cwd"] = cwd
        if user is not None:
            proc["user"] = {"uid": user[0], "gid": user[1]}
        proc.pop("consoleSize", None)
        io = IOSet(
            exec_id,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            terminal=terminal,
            fifo_root=self._c.fifo_dir,
            owner=self._c._iosets,
        )
        try:
            await self._c._unary(
                _SERVICE + "Exec",
                tasks_pb2.ExecProcessRequest(
                    container_id=self.container_id,
                    exec_id=exec_id,
                    stdin=io.paths.stdin,
                    stdout=io.paths.stdout,
                    stderr=io.paths.stderr,
                    terminal=terminal,
                    spec=_convert.pack_json(_convert.PROCESS_TYPE_URL, proc),
                ),
                empty_pb2.Empty,
            )
        except BaseException:
            io.close()
            raise
        p = Process(self._c, self.container_id, exec_id, io, 0)
        if start:
            try:
                await p.start()
            except BaseException:
                with contextlib.suppress(errdefs.ArunError):
                    await p.delete()
                io.close()
                raise
        return p

    async def delete(self, *, force: bool = False) -> ExitStatus:
        """Remove the task (it must have exited; ``force``: SIGKILL it first and wait)."""
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        if not force:
            await self._check_stopped(allow_created=False)
        else:
            with contextlib.suppress(errdefs.NotFoundError, errdefs.FailedPreconditionError):
                st = await self.status()
                if st not in (TaskStatus.STOPPED, TaskStatus.UNKNOWN):
                    waiter = asyncio.ensure_future(self.wait(output_grace=0.5))
                    try:
                        await self.kill(_signal.SIGKILL, all=True)
                        async with asyncio.timeout(30):
                            await waiter
                    finally:
                        waiter.cancel()
                        await asyncio.gather(waiter, return_exceptions=True)
        try:
            r = await self._c._unary(
                _SERVICE + "Delete",
                tasks_pb2.DeleteTaskRequest(container_id=self.container_id),
                tasks_pb2.DeleteResponse,
            )
        except errdefs.NotFoundError:
            self._close_io()
            raise
        except errdefs.ArunError:
            raise
        self._close_io()
        return ExitStatus(code=int(r.exit_status), exited_at=_convert.timestamp(r.exited_at))
