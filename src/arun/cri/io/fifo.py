"""FIFOs between the daemon and a shim, and reading them on the event loop.

The daemon makes the FIFOs and passes their paths to the shim (``core.runtime.IO``);
the shim opens them when it creates the process. A FIFO read end opened before
any writer exists would read EOF at once, so :class:`FifoReader` also holds a
write end of its own until the shim has opened the FIFO (``release()``), after
which EOF means the shim closed its side: the process and its stdio are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arun.core.runtime import IO


@dataclass(frozen=True)
class FifoSet:
    directory: Path
    stdin: str
    stdout: str
    stderr: str
    terminal: bool

    def io(self) -> IO:
        return IO(stdin=self.stdin, stdout=self.stdout, stderr=self.stderr, terminal=self.terminal)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def new_fifo_set(
    directory: Path,
    id: str,
    *,
    stdin: bool,
    stdout: bool = True,
    stderr: bool = True,
    terminal: bool = False,
    reuse: bool = False,
) -> FifoSet:
    """FIFOs ``<directory>/<id>-stdin|stdout|stderr`` (stderr none with a terminal).

    With ``reuse``, FIFOs that already exist are kept (a restarted daemon reconnects to the
    ones its shims hold open)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = {}
    for name, wanted in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr and not terminal)):
        if not wanted:
            paths[name] = ""
            continue
        path = directory / f"{id}-{name}"
        if reuse and path.is_fifo():
            paths[name] = str(path)
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.mkfifo(path, 0o600)
        paths[name] = str(path)
    return FifoSet(directory, paths["stdin"], paths["stdout"], paths["stderr"], terminal)


def pipe_file(fd: int) -> Any:
    """A file object for ``connect_read_pipe`` that closes ``fd`` exactly once.

    uvloop hands the descriptor to libuv, which closes it, and then closes the file object
    too: a second ``close(fd)`` that can hit a descriptor another thread has just opened
    under the same number. Under uvloop the file object therefore does not own the fd;
    under asyncio's own loop it does (the transport closes only the file object).
    """
    uv = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    return os.fdopen(fd, "rb", buffering=0, closefd=not uv)


class _ReadProtocol(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None], done: asyncio.Future[None]) -> None:
        self.on_data = on_data
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class FifoReader:
    """Reads one FIFO, calling ``on_data`` for every chunk; ``done`` resolves at EOF."""

    def __init__(self, path: str, on_data: Callable[[bytes], None]) -> None:
        self.path = path
        self.on_data = on_data
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Our own writer, so the read end does not see EOF before the shim opens the FIFO.
        self._keeper = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._transport: asyncio.ReadTransport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        pipe = pipe_file(self._fd)
        self._fd = -1
        transport, _ = await loop.connect_read_pipe(lambda: _ReadProtocol(self.on_data, self.done), pipe)
        self._transport = transport

    def release(self) -> None:
        """The shim holds the FIFO now: from here on EOF is real."""
        fd, self._keeper = self._keeper, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        self.release()
        if self._transport is not None:
            self._transport.close()
        elif self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self.done.done():
            self.done.set_result(None)


class FifoWriter:
    """The daemon's write end of a stdin FIFO (opened read-write, so it never blocks or fails
    for want of a reader); ``close()`` is the client's end of input."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        async with self._lock:
            while view:
                if self._fd < 0:
                    raise BrokenPipeError("stdin is closed")
                try:
                    n = os.write(self._fd, view)
                    view = view[n:]
                except BlockingIOError:
                    await asyncio.sleep(0.005)
                except OSError as e:
                    if e.errno == errno.EPIPE:
                        raise BrokenPipeError(str(e)) from e
                    raise

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
