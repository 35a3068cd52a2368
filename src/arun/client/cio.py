"""A task's stdio through FIFOs the client creates, as containerd's ``cio`` package does.

For each process the client makes a private directory holding
``<id>-stdin``, ``<id>-stdout`` and ``<id>-stderr`` FIFOs, passes their paths in
the Create/Exec request, and copies between them and the caller's objects. The
shim opens the other ends.

EOF on a FIFO means every writer closed it, so a reader opened before the shim
has its writer would see EOF at once. The client therefore holds a write end
of each output FIFO itself until the process has started (``started()``): by
then the shim's writer is in place, and the next EOF is the real end of the
output.

Outputs accept a binary file object (``io.BytesIO()`` captures), any object
with ``write(bytes)``, or a callable taking bytes; stdin accepts bytes, a
binary file object, or an async iterable of bytes. ``None`` means no stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from arun.asyncutil import readable

__all__ = ["DEFAULT_FIFO_ROOT", "IOSet", "Input", "Output"]

DEFAULT_FIFO_ROOT = "/run/arun/fifo"
_READ_SIZE = 32 * 1024


class _Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


Output = _Writable | Callable[[bytes], Any] | None
Input = bytes | IO[bytes] | AsyncIterable[bytes] | None


def _fifo_root(root: str | None) -> str:
    if root:
        return root
    base = DEFAULT_FIFO_ROOT
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return tempfile.gettempdir()


@dataclass(frozen=True)
class Paths:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


class _Reader:
    """Copies one output FIFO into its sink until EOF."""

    def __init__(self, path: str, sink: Output) -> None:
        self.path = path
        self.sink = sink
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Our own writer keeps the FIFO from reading EOF until the shim has opened its end.
        self.keeper: int | None = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending: set[asyncio.Future[Any]] = set()
        asyncio.get_running_loop().add_reader(self.fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            self._finish(e)
            return
        if not data:
            self._finish(None)
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            return
        if callable(getattr(sink, "write", None)):
            result = sink.write(data)  # type: ignore[union-attr]
        else:
            result = sink(data)  # type: ignore[operator]
        if inspect.isawaitable(result):
            fut = asyncio.ensure_future(result)
            self._pending.add(fut)
            fut.add_done_callback(self._pending.discard)
        flush = getattr(sink, "flush", None)
        if callable(flush) and not isinstance(sink, asyncio.StreamWriter):
            with contextlib.suppress(Exception):
                flush()

    def _finish(self, exc: BaseException | None) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            loop.remove_reader(self.fd)
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)

    def release(self) -> None:
        """Drop our writer: from now on EOF means the process side is done."""
        if self.keeper is not None:
            os.close(self.keeper)
            self.keeper = None

    async def wait(self) -> None:
        await asyncio.shield(self.done)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def close(self) -> None:
        self.release()
        if not self.done.done():
            # Read what is still buffered before going away.
            with contextlib.suppress(OSError):
                while True:
                    data = os.read(self.fd, _READ_SIZE)
                    if not data:
                        break
                    self._deliver(data)
            self._finish(None)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class IOSet:
    """The FIFOs and copiers of one process. Create it before Create/Exec; close it after Delete."""

    def __init__(
        self,
        process_id: str,
        *,
        stdin: Input = None,
        stdout: Output = None,
        stderr: Output = None,
        terminal: bool = False,
        fifo_root: str | None = None,
        owner: set[IOSet] | None = None,
    ) -> None:
        self.terminal = terminal
        # The client's register of open sets: whatever is still open when it closes is closed then.
        self._owner = owner
        self._stdin_src = stdin
        self._dir: str | None = None
        self._readers: list[_Reader] = []
        self._stdin_fd: int | None = None
        self._stdin_task: asyncio.Task[None] | None = None
        if stdin is None and stdout is None and (stderr is None or terminal):
            self.paths = Paths(terminal=terminal)
            return
        self._dir = tempfile.mkdtemp(prefix="", dir=_fifo_root(fifo_root))
        try:
            d = Path(self._dir)
            stdin_p = str(d / f"{process_id}-stdin") if stdin is not None else ""
            # Like containerd's cio: with any stream there are always stdout and stderr FIFOs
            # (runc shims refuse an empty path); output nobody asked for is read and dropped.
            stdout_p = str(d / f"{process_id}-stdout")
            stderr_p = str(d / f"{process_id}-stderr") if not terminal else ""
            for p in (stdin_p, stdout_p, stderr_p):
                if p:
                    os.mkfifo(p, 0o700)
            self.paths = Paths(stdin=stdin_p, stdout=stdout_p, stderr=stderr_p, terminal=terminal)
            if stdout_p:
                self._readers.append(_Reader(stdout_p, stdout))
            if stderr_p:
                self._readers.append(_Reader(stderr_p, stderr))
            if stdin_p:
                # O_RDWR never blocks and never fails with ENXIO, whether or not the shim is there yet.
                self._stdin_fd = os.open(stdin_p, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise
        if owner is not None:
            owner.add(self)

    def started(self) -> None:
        """The process runs (its stdio is in place): start stdin, let outputs see their real EOF."""
        for r in self._readers:
            r.release()
        if self._stdin_fd is not None and self._stdin_task is None:
            self._stdin_task = asyncio.ensure_future(self._copy_stdin())

    async def _copy_stdin(self) -> None:
        fd = self._stdin_fd
        assert fd is not None
        src = self._stdin_src
        try:
            if isinstance(src, bytes | bytearray | memoryview):
                await _write_all(fd, bytes(src))
            elif hasattr(src, "__aiter__"):
                async for chunk in src:  # type: ignore[union-attr]
                    await _write_all(fd, bytes(chunk))
            elif src is not None and _fileno(src) is not None:
                # A terminal, pipe or file: read what is there whenever the loop says it is
                # readable. No thread: one blocked in read() on a terminal would keep the
                # program from exiting until the next keystroke.
                src_fd = _fileno(src)
                assert src_fd is not None
                while True:
                    chunk = await _read_when_ready(src_fd)
                    if not chunk:
                        break
                    await _write_all(fd, chunk)
            elif src is not None and hasattr(src, "read"):
                read = getattr(src, "read1", src.read)
                while True:
                    chunk = await asyncio.to_thread(read, _READ_SIZE)
                    if not chunk:
                        break
                    await _write_all(fd, chunk)
        finally:
            self.stdin_done = True

    stdin_done = False

    async def wait_stdin(self) -> None:
        """Until the whole stdin source has been written into the FIFO."""
        if self._stdin_task is not None:
            await self._stdin_task

    def close_stdin(self) -> None:
        """Stop copying into the process's stdin and close its FIFO (the process sees EOF)."""
        if self._stdin_task is not None and not self._stdin_task.done():
            self._stdin_task.cancel()
        if self._stdin_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdin_fd)
            self._stdin_fd = None

    async def wait(self, grace: float | None = None) -> None:
        """Until every output reached EOF (``grace``: give up quietly after that many seconds)."""
        if not self._readers:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(r.wait() for r in self._readers))

    def close(self) -> None:
        """Stop copying, close every descriptor and remove the FIFO directory."""
        self.close_stdin()
        for r in self._readers:
            r.close()
        self._readers = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._owner is not None:
            self._owner.discard(self)


def _fileno(src: object) -> int | None:
    fileno = getattr(src, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return fd if isinstance(fd, int) else None


async def _read_when_ready(fd: int) -> bytes:
    """One read of whatever ``fd`` has once it is readable (b"" at EOF)."""
    try:
        await readable(fd)
    except (OSError, ValueError):
        # Not pollable (a regular file on some loops): a plain read never blocks for long.
        return await asyncio.to_thread(os.read, fd, _READ_SIZE)
    try:
        return os.read(fd, _READ_SIZE)
    except BlockingIOError:
        return await _read_when_ready(fd)


async def _write_all(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
            continue
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno == errno.EPIPE:
                return
            raise
        ready: asyncio.Future[None] = loop.create_future()

        def wake(f: asyncio.Future[None] = ready) -> None:
            if not f.done():
                f.set_result(None)

        loop.add_writer(fd, wake)
        try:
            await ready
        finally:
            loop.remove_writer(fd)


def is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False
