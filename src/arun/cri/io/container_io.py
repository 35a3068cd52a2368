"""A container's stdio: FIFOs to its shim, the CRI log, and attached clients.

stdout and stderr are read by the daemon for the container's whole life and
written to the CRI log file (when the container has a log path); clients that
attach get a copy of what arrives while they are attached. stdin (for containers
created with ``stdin: true``) is written by attached clients; with
``stdin_once``, the first client's end of input closes the container's stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from arun.core.runtime import IO
from arun.cri.io.fifo import FifoReader, FifoSet, FifoWriter, new_fifo_set
from arun.cri.io.logger import CRILogWriter, LogFile
from arun.cri.streaming import InputStream, OutputStream

log = logging.getLogger(__name__)

STDOUT = "stdout"
STDERR = "stderr"


class _Sink:
    """One attached output: chunks queued from the FIFO reader, sent by its own task."""

    def __init__(self, out: OutputStream) -> None:
        self.out = out
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())
        self.broken = False

    async def _run(self) -> None:
        while True:
            chunk = await self.queue.get()
            if chunk is None:
                return
            try:
                await self.out.write(chunk)
            except (BrokenPipeError, ConnectionError, OSError):
                self.broken = True
                return

    def put(self, data: bytes) -> None:
        if not self.broken:
            self.queue.put_nowait(data)

    def end(self) -> None:
        self.queue.put_nowait(None)


class ContainerIO:
    def __init__(
        self,
        id: str,
        directory: Path,
        *,
        stdin: bool,
        stdin_once: bool,
        tty: bool,
        log_path: str,
        max_line_size: int,
        reuse: bool = False,
    ) -> None:
        self.id = id
        self.stdin_once = stdin_once
        self.tty = tty
        self.fifos: FifoSet = new_fifo_set(directory, id, stdin=stdin, terminal=tty, reuse=reuse)
        self.log_path = log_path
        self.log_file: LogFile | None = LogFile(log_path) if log_path else None
        self._writers: dict[str, CRILogWriter] = {}
        if self.log_file is not None:
            self._writers[STDOUT] = CRILogWriter(self.log_file, STDOUT, max_line_size)
            if not tty:
                self._writers[STDERR] = CRILogWriter(self.log_file, STDERR, max_line_size)
        self._sinks: dict[str, set[_Sink]] = {STDOUT: set(), STDERR: set()}
        self._readers: list[FifoReader] = []
        self.stdin: FifoWriter | None = None
        self._stdin_closed = False
        # Closes the task's stdin in the shim (set by the plugin once the task exists).
        self.close_stdin: Callable[[], Awaitable[None]] | None = None

    @property
    def io(self) -> IO:
        return self.fifos.io()

    async def open(self) -> None:
        """Open our ends of the FIFOs and start reading (before the shim opens them)."""
        try:
            for stream, path in ((STDOUT, self.fifos.stdout), (STDERR, self.fifos.stderr)):
                if not path:
                    continue
                reader = FifoReader(path, self._on_data(stream))
                self._readers.append(reader)
                await reader.start()
                reader.done.add_done_callback(self._on_eof(stream))
            if self.fifos.stdin:
                self.stdin = FifoWriter(self.fifos.stdin)
        except BaseException:
            self.close()
            raise

    def opened_by_shim(self) -> None:
        """The task exists, so the shim holds the FIFOs: EOF from now on means the end."""
        for r in self._readers:
            r.release()

    def _on_data(self, stream: str) -> Callable[[bytes], None]:
        writer = self._writers.get(stream)
        sinks = self._sinks[stream]

        def on_data(data: bytes) -> None:
            if writer is not None:
                writer.feed(data)
            for s in sinks:
                s.put(data)

        return on_data

    def _on_eof(self, stream: str) -> Callable[[asyncio.Future[None]], None]:
        def on_eof(_: asyncio.Future[None]) -> None:
            writer = self._writers.get(stream)
            if writer is not None:
                writer.close()
            for s in self._sinks[stream]:
                s.end()
            self._sinks[stream].clear()

        return on_eof

    async def wait(self) -> None:
        """Until every output stream reached EOF (the container's output is all logged)."""
        if self._readers:
            await asyncio.gather(*(asyncio.shield(r.done) for r in self._readers))

    def outputs_done(self) -> bool:
        return all(r.done.done() for r in self._readers)

    def reopen_log(self) -> None:
        if self.log_file is not None:
            self.log_file.reopen()

    async def attach(
        self,
        stdin: InputStream | None,
        stdout: OutputStream | None,
        stderr: OutputStream | None,
    ) -> None:
        """Copy the container's output to the client and its input to the container, until the
        container's output ends, the client's input ends (with stdin_once), or the call is cancelled."""
        added: list[tuple[str, _Sink]] = []
        for stream, out in ((STDOUT, stdout), (STDERR, None if self.tty else stderr)):
            if out is None:
                continue
            reader_done = any(r.path == getattr(self.fifos, stream) and r.done.done() for r in self._readers)
            if reader_done or not getattr(self.fifos, stream):
                continue
            sink = _Sink(out)
            self._sinks[stream].add(sink)
            added.append((stream, sink))
        stdin_task: asyncio.Task[None] | None = None
        if stdin is not None and self.stdin is not None and not self._stdin_closed:
            stdin_task = asyncio.create_task(self._copy_stdin(stdin))
        try:
            waits: list[asyncio.Future[None] | asyncio.Task[None]] = [s.task for _, s in added]
            if stdin_task is not None:
                waits.append(stdin_task)
            pending = set(waits)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if stdin_task is not None and stdin_task in done:
                    # The client ended its input: with stdin_once the container's stdin is closed
                    # and its output ends in due course; otherwise the attach is over.
                    if not (self.stdin_once and not self.tty):
                        break
                if all(s.task.done() for _, s in added):
                    break
        finally:
            for stream, sink in added:
                self._sinks[stream].discard(sink)
                if not sink.task.done():
                    sink.end()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await asyncio.wait_for(asyncio.shield(sink.task), 1.0)
                    sink.task.cancel()
            if stdin_task is not None and not stdin_task.done():
                stdin_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await stdin_task

    async def _copy_stdin(self, stdin: InputStream) -> None:
        assert self.stdin is not None
        try:
            while True:
                data = await stdin.read(32 * 1024)
                if not data:
                    break
                await self.stdin.write(data)
        except (BrokenPipeError, ConnectionError, OSError) as e:
            log.debug("stdin copy to container %s ended: %s", self.id, e)
        if self.stdin_once and not self.tty:
            await self.close_container_stdin()

    async def close_container_stdin(self) -> None:
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self.stdin is not None:
            self.stdin.close()
        if self.close_stdin is not None:
            try:
                await self.close_stdin()
            except Exception as e:
                log.warning("failed to close stdin of container %s: %s", self.id, e)

    def close(self, *, remove: bool = True) -> None:
        """Stop copying and close our ends; with ``remove`` (the container is gone) delete the
        FIFOs too. A daemon that shuts down keeps them: its shims still hold them, and the next
        daemon reopens them."""
        for r in self._readers:
            r.close()
        for stream in (STDOUT, STDERR):
            for s in self._sinks[stream]:
                s.end()
            self._sinks[stream].clear()
        for w in self._writers.values():
            w.close()
        if self.log_file is not None:
            self.log_file.close()
        if self.stdin is not None:
            self.stdin.close()
        if remove:
            self.fifos.remove()
