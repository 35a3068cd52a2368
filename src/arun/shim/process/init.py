"""The init process of a container: ``runc create`` → ``start`` → exit → ``delete``.

Operations take the process lock (one runc command at a time per container, like the Go shim's
``p.mu``); an exit is recorded without it, from the reaper's fan-out, and always wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as _signal
from typing import Any

from arun import errdefs
from arun.shim.mount import Mounter
from arun.shim.process.io import Console, ConsoleSocket, ProcessIO, Stdio
from arun.shim.process.states import InitCreated, InitState, Status
from arun.shim.runc import NULL_STDIO, Runc

log = logging.getLogger(__name__)

INIT_PID_FILE = "init.pid"
IO_DRAIN_TIMEOUT = 10.0


def read_pid_file(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise errdefs.NotFoundError(f"pid file {path!r} was not written by the runtime") from None
    try:
        return int(text)
    except ValueError:
        raise errdefs.InternalError(f"pid file {path!r} holds {text[:40]!r}, not a pid") from None


class Init:
    def __init__(
        self,
        id: str,
        bundle: str,
        runc: Runc,
        stdio: Stdio,
        *,
        mounter: Mounter | None = None,
        rootfs: str | None = None,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
        io_uid: int = 0,
        io_gid: int = 0,
    ) -> None:
        self.id = id
        self.bundle = bundle
        self.runc = runc
        self.stdio = stdio
        self.mounter = mounter
        #: Set when the shim mounted the rootfs and must unmount it on delete.
        self.rootfs = rootfs
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.io_uid = io_uid
        self.io_gid = io_gid
        self.pid = 0
        self.exit_status = 0
        self.exited_at_ns = 0
        self.pausing = False
        self.state: InitState = InitCreated(self)
        self.io: ProcessIO | None = None
        self.console: Console | None = None
        self._lock = asyncio.Lock()
        self._exited = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    # -- queries -------------------------------------------------------------------------------

    def status(self) -> Status:
        return Status.PAUSING if self.pausing else self.state.status

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    async def wait(self) -> None:
        await self._exited.wait()

    # -- create ----------------------------------------------------------------------------------

    async def create(self) -> None:
        """``runc create`` with stdio wired up; sets ``pid``. On failure nothing is left open."""
        pid_file = os.path.join(self.bundle, INIT_PID_FILE)
        socket: ConsoleSocket | None = None
        try:
            if self.stdio.terminal:
                socket = ConsoleSocket.create()
            else:
                self.io = ProcessIO.create(self.stdio, self.io_uid, self.io_gid)
            creating = asyncio.ensure_future(
                self.runc.create(
                    self.id,
                    self.bundle,
                    pid_file=pid_file,
                    stdio=self.io.runc_stdio() if self.io is not None else NULL_STDIO,
                    console_socket=socket.path if socket is not None else None,
                    no_pivot=self.no_pivot,
                    no_new_keyring=self.no_new_keyring,
                )
            )
            try:
                if self.io is not None:
                    await self._open_io_meanwhile(creating)
                else:
                    await creating
            finally:
                if not creating.done():
                    creating.cancel()
                    await asyncio.gather(creating, return_exceptions=True)
                if self.io is not None:
                    self.io.close_runc_side()
            if socket is not None:
                self.console = Console(await socket.receive_master())
                await self.console.start(self.stdio)
            self.pid = read_pid_file(pid_file)
        except BaseException:
            self._close_io()
            raise
        finally:
            if socket is not None:
                socket.close()

    async def _open_io_meanwhile(self, creating: asyncio.Future[None]) -> None:
        """Open the client's side of stdio (its FIFOs) and start copying while ``runc create``
        runs — the order the Go shim has it in, after runc, only overlapped: a runc failure is
        the error reported (and the copies are closed); a failure to open stdio after runc
        succeeded is reported, with the container runc made deleted again."""
        assert self.io is not None
        await asyncio.sleep(0)  # runc is spawned in its task's first step
        io_error: BaseException | None = None
        try:
            await self.io.start()
        except Exception as exc:
            io_error = exc
        await creating  # runc's error, when it failed, is the one raised
        if io_error is not None:
            with contextlib.suppress(Exception):
                await self.runc.delete(self.id, force=True)
            raise io_error

    # -- operations (state-checked) --------------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            await self.state.start()

    async def delete(self) -> None:
        async with self._lock:
            await self.state.delete()

    async def pause(self) -> None:
        async with self._lock:
            await self.state.pause()

    async def resume(self) -> None:
        async with self._lock:
            await self.state.resume()

    async def update(self, resources: dict[str, Any]) -> None:
        async with self._lock:
            await self.state.update(resources)

    async def checkpoint(self, image_path: str, work_path: str, exit: bool = False) -> None:
        async with self._lock:
            await self.state.checkpoint(image_path, work_path, exit)

    async def kill(self, signal: int, all: bool = False) -> None:
        async with self._lock:
            await self.state.kill(signal, all)

    async def kill_all(self) -> None:
        """SIGKILL every process of the container (its init has exited, others may remain)."""
        async with self._lock:
            await self.runc.kill(self.id, int(_signal.SIGKILL), all=True)

    def exec_allowed(self) -> None:
        self.state.exec_allowed()

    def set_exited(self, status: int, timestamp_ns: int) -> None:
        self.state.set_exited(status, timestamp_ns)

    def resize(self, width: int, height: int) -> None:
        if self.console is not None:
            self.console.resize(width, height)

    def close_io(self) -> None:
        if self.console is not None:
            self.console.close_stdin()
        if self.io is not None:
            self.io.close_stdin()

    # -- the work, called by the state objects ----------------------------------------------------

    async def _start(self) -> None:
        await self.runc.start(self.id)

    def _set_exited(self, status: int, timestamp_ns: int) -> None:
        self.exit_status = status
        self.exited_at_ns = timestamp_ns
        if self.console is not None:
            self.console.shutdown()
        self._exited.set()

    async def _delete(self) -> None:
        await self._drain()
        error: BaseException | None = None
        try:
            await self.runc.delete(self.id)
        except errdefs.NotFoundError:
            pass
        except errdefs.ArunError as exc:
            error = exc
        self._close_io()
        if self.rootfs is not None and self.mounter is not None:
            try:
                self.mounter.unmount_all(self.rootfs)  # quick; no thread needed
            except Exception as exc:
                log.warning("unmount rootfs of %s failed: %s", self.id, exc)
                if error is None:
                    error = exc
            else:
                self.rootfs = None
        if error is not None:
            raise error

    async def _drain(self) -> None:
        for copies in (self.io, self.console):
            if copies is not None and not await copies.drain(IO_DRAIN_TIMEOUT):
                log.warning("stdio of %s not drained after %.0fs", self.id, IO_DRAIN_TIMEOUT)

    def _close_io(self) -> None:
        if self.io is not None:
            self.io.close()
        if self.console is not None:
            self.console.close()

    async def _pause(self) -> None:
        await self.runc.pause(self.id)

    async def _resume(self) -> None:
        await self.runc.resume(self.id)

    def _resume_after_exit(self) -> None:
        async def resume() -> None:
            with contextlib.suppress(errdefs.ArunError):
                await self.runc.resume(self.id)

        task = asyncio.get_running_loop().create_task(resume())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _update(self, resources: dict[str, Any]) -> None:
        await self.runc.update(self.id, resources)

    async def _checkpoint(self, image_path: str, work_path: str, exit: bool) -> None:
        await self.runc.checkpoint(
            self.id, image_path=image_path, work_path=work_path, leave_running=not exit
        )

    async def _kill(self, signal: int, all: bool) -> None:
        try:
            await self.runc.kill(self.id, signal, all=all)
        except errdefs.NotFoundError as exc:
            raise errdefs.NotFoundError(f"process already finished: {exc.message}") from exc
