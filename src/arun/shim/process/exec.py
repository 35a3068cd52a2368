"""An exec process: ``runc exec --detach`` into a running container, signalled directly by pid."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from arun import errdefs
from arun.shim.process.init import IO_DRAIN_TIMEOUT, Init, read_pid_file
from arun.shim.process.io import Console, ConsoleSocket, ProcessIO, Stdio
from arun.shim.process.states import ExecCreated, ExecState, Status
from arun.shim.runc import NULL_STDIO

log = logging.getLogger(__name__)


class ExecProcess:
    def __init__(self, id: str, parent: Init, spec: Mapping[str, Any], stdio: Stdio) -> None:
        self.id = id
        self.parent = parent
        self.spec = dict(spec)
        self.spec["terminal"] = stdio.terminal
        self.stdio = stdio
        self.pid = 0
        self.exit_status = 0
        self.exited_at_ns = 0
        self.state: ExecState = ExecCreated(self)
        self.io: ProcessIO | None = None
        self.console: Console | None = None
        self._lock = asyncio.Lock()
        self._exited = asyncio.Event()

    @property
    def pid_file(self) -> str:
        return os.path.join(self.parent.bundle, f"{self.id}.pid")

    def status(self) -> Status:
        parent = self.parent.status()
        if parent in (Status.PAUSED, Status.PAUSING):
            return parent
        return self.state.status

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    async def wait(self) -> None:
        await self._exited.wait()

    async def start(self) -> None:
        async with self._lock:
            await self.state.start()

    async def delete(self) -> None:
        async with self._lock:
            await self.state.delete()

    async def kill(self, signal: int, all: bool = False) -> None:
        async with self._lock:
            await self.state.kill(signal)

    def resize(self, width: int, height: int) -> None:
        self.state.resize(width, height)

    def set_exited(self, status: int, timestamp_ns: int) -> None:
        self.state.set_exited(status, timestamp_ns)

    def close_io(self) -> None:
        if self.console is not None:
            self.console.close_stdin()
        if self.io is not None:
            self.io.close_stdin()

    # -- the work ------------------------------------------------------------------------------

    async def _start(self) -> None:
        socket: ConsoleSocket | None = None
        try:
            if self.stdio.terminal:
                socket = ConsoleSocket.create()
            else:
                self.io = ProcessIO.create(self.stdio, self.parent.io_uid, self.parent.io_gid)
            try:
                await self.parent.runc.exec(
                    self.parent.id,
                    self.spec,
                    pid_file=self.pid_file,
                    stdio=self.io.runc_stdio() if self.io is not None else NULL_STDIO,
                    console_socket=socket.path if socket is not None else None,
                )
            finally:
                if self.io is not None:
                    self.io.close_runc_side()
            if socket is not None:
                self.console = Console(await socket.receive_master())
                await self.console.start(self.stdio)
            elif self.io is not None:
                await self.io.start()
            self.pid = read_pid_file(self.pid_file)
        except BaseException:
            self._close_io()
            # Nothing will ever exit: release waiters with a failure status, as a shell would.
            if not self.exited:
                self.set_exited(255, time.time_ns())
            raise
        finally:
            if socket is not None:
                socket.close()

    def _set_exited(self, status: int, timestamp_ns: int) -> None:
        self.exit_status = status
        self.exited_at_ns = timestamp_ns
        if self.console is not None:
            self.console.shutdown()
        self._exited.set()

    async def _delete(self) -> None:
        for copies in (self.io, self.console):
            if copies is not None and not await copies.drain(IO_DRAIN_TIMEOUT):
                log.warning("stdio of exec %s not drained after %.0fs", self.id, IO_DRAIN_TIMEOUT)
        self._close_io()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pid_file)
        if not self.exited:  # deleted without ever running: release anyone waiting
            self._set_exited(255, time.time_ns())

    def _close_io(self) -> None:
        if self.io is not None:
            self.io.close()
        if self.console is not None:
            self.console.close()

    async def _kill(self, signal: int) -> None:
        if self.pid == 0:
            raise errdefs.FailedPreconditionError(f"exec {self.id!r} not created")
        if self.exited:
            raise errdefs.NotFoundError(f"exec {self.id!r}: process already finished")
        try:
            os.kill(self.pid, signal)
        except ProcessLookupError:
            raise errdefs.NotFoundError(f"exec {self.id!r}: process already finished") from None

    def _resize(self, width: int, height: int) -> None:
        if self.console is not None:
            self.console.resize(width, height)
