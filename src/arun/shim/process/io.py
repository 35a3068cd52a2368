"""Carrying a process's stdio between runc and what the client asked for.

The client (``ctr``, CRI, arun) creates FIFOs and sends their paths; the shim gives runc pipes and
copies between the pipes and the FIFOs, so the container never holds the client's files and the
shim can outlive a client that goes away:

* stdout/stderr FIFOs are opened twice, read-only first (a keep-alive, so that a reader who leaves
  never turns the shim's writes into EPIPE) and then write-only — the same pair the Go shim holds;
* the stdin FIFO is opened read-only and non-blocking, and the shim also holds a write-only end, so
  the copy sees EOF only after ``CloseIO`` *and* the client's writer closing;
* ``file://<path>`` appends stdout and stderr to a file; ``binary://`` is not supported.

A terminal goes through runc's ``--console-socket``: runc sends the pty master over SCM_RIGHTS
and the shim copies FIFO → master and master → stdout FIFO.

Copies run on the event loop with ``connect_read_pipe``/``connect_write_pipe`` and back-pressure
(the writer's high-water mark pauses the reader).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import termios
from dataclasses import dataclass
from typing import BinaryIO

from arun import errdefs
from arun.asyncutil import readable
from arun.shim.runc import NULL_STDIO, StdioFds
from arun.shim.util import make_temp_dir, percent_decode, remove_tree, split_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stdio:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False

    def is_null(self) -> bool:
        return not (self.stdin or self.stdout or self.stderr)


# -- sinks and pumps ---------------------------------------------------------------------------


class _Pump:
    """Copies one readable fd to one sink until EOF; ``done`` completes when both ends are closed.

    The sink is either a pipe/FIFO/tty (an asyncio write transport, with back-pressure) or a
    regular file (plain ``os.write``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self._reader: asyncio.ReadTransport | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._file_fd = -1
        self._reader_closed = False
        self._writer_closed = False

    async def start(self, src_fd: int, dst_fd: int) -> None:
        """Take ownership of both fds and start copying."""
        try:
            if _is_regular(dst_fd):
                self._file_fd = dst_fd
            else:
                os.set_blocking(dst_fd, False)
                self._writer, _ = await self.loop.connect_write_pipe(
                    lambda: _WriteSide(self), _fileobj(dst_fd, "wb")
                )
            dst_fd = -1
            os.set_blocking(src_fd, False)
            self._reader, _ = await self.loop.connect_read_pipe(
                lambda: _ReadSide(self), _fileobj(src_fd, "rb")
            )
        except BaseException:
            if dst_fd >= 0:
                os.close(dst_fd)
            self._close_writer()
            with contextlib.suppress(OSError):
                os.close(src_fd)
            self._reader_closed = True
            self._check_done()
            raise

    # called by the protocols
    def _data(self, data: bytes) -> None:
        if self._writer is not None:
            if not self._writer.is_closing():
                self._writer.write(data)
        elif self._file_fd >= 0:
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self._file_fd, view)
                    view = view[n:]
            except OSError as exc:
                log.warning("stdio copy %s: write failed: %s", self.name, exc)
                self.stop()

    def _reader_lost(self) -> None:
        self._reader_closed = True
        self._close_writer()
        self._check_done()

    def _writer_lost(self) -> None:
        self._writer_closed = True
        # Nowhere to write any more: stop reading too (the container will see EPIPE).
        if self._reader is not None and not self._reader.is_closing():
            self._reader.close()
        self._check_done()

    def pause(self) -> None:
        if self._reader is not None and not self._reader.is_closing():
            self._reader.pause_reading()

    def resume(self) -> None:
        if self._reader is not None and not self._reader.is_closing():
            self._reader.resume_reading()

    def _close_writer(self) -> None:
        if self._writer is not None:
            if not self._writer.is_closing():
                self._writer.close()  # flushes what is buffered, then connection_lost
        else:
            if self._file_fd >= 0:
                os.close(self._file_fd)
                self._file_fd = -1
            self._writer_closed = True

    def _check_done(self) -> None:
        if self._reader_closed and self._writer_closed and not self.done.done():
            self.done.set_result(None)

    def drain_now(self) -> None:
        """Copy whatever the source has right now (non-blocking), then stop: used when the
        process is gone but something else keeps its tty open."""
        reader = self._reader
        if reader is None or reader.is_closing():
            return
        reader.pause_reading()
        fd = reader.get_extra_info("pipe").fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            self._data(data)
        self.stop()

    def stop(self) -> None:
        if self._reader is not None and not self._reader.is_closing():
            self._reader.close()
        elif self._reader is None:
            self._reader_closed = True
            self._close_writer()
            self._check_done()


class _ReadSide(asyncio.Protocol):
    def __init__(self, pump: _Pump) -> None:
        self.pump = pump

    def data_received(self, data: bytes) -> None:
        self.pump._data(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # EIO on a pty master means the last slave fd closed: an ordinary end.
        if exc is not None and not (isinstance(exc, OSError) and exc.errno == errno.EIO):
            log.debug("stdio copy %s: read ended: %s", self.pump.name, exc)
        self.pump._reader_lost()


class _WriteSide(asyncio.Protocol):
    def __init__(self, pump: _Pump) -> None:
        self.pump = pump

    def pause_writing(self) -> None:
        self.pump.pause()

    def resume_writing(self) -> None:
        self.pump.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("stdio copy %s: write ended: %s", self.pump.name, exc)
        self.pump._writer_lost()


def _fileobj(fd: int, mode: str) -> BinaryIO:
    """A file object owning ``fd``, as the pipe transports want (no I/O happens here)."""
    return open(fd, mode, buffering=0, closefd=True)  # type: ignore[return-value]


def _is_regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


# -- opening the client's side -----------------------------------------------------------------


def _parse(uri: str) -> tuple[str, str]:
    """(scheme, path) of a stdio string; a bare path is a FIFO."""
    if not uri:
        return "", ""
    scheme, _, path, _, _ = split_uri(uri)
    if scheme in ("", "fifo"):
        return "fifo", percent_decode(path) if scheme else uri
    if scheme == "file":
        return "file", percent_decode(path)
    if scheme in ("binary", "binary-v2"):
        raise errdefs.UnimplementedError(
            f"stdio scheme {scheme!r} is not supported by the arun shim ({uri!r})"
        )
    raise errdefs.InvalidArgumentError(f"unknown stdio scheme {scheme!r} in {uri!r}")


def open_output(uri: str) -> tuple[int, int]:
    """(write fd, keep-alive fd or -1) for a stdout/stderr destination."""
    scheme, path = _parse(uri)
    if scheme == "file":
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640), -1
    # Read side first: it never blocks, and once it exists the write-only open cannot block.
    keep = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC), keep
    except BaseException:
        os.close(keep)
        raise


def open_input(uri: str) -> tuple[int, int]:
    """(read fd, keep-alive write fd) for a stdin FIFO."""
    scheme, path = _parse(uri)
    if scheme != "fifo":
        raise errdefs.InvalidArgumentError(f"stdin must be a fifo, not {uri!r}")
    rd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return rd, os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except BaseException:
        os.close(rd)
        raise


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


class _Copies:
    """The pumps of one process and the fds kept alive beside them."""

    def __init__(self) -> None:
        self.pumps: list[_Pump] = []
        self.keepalive: list[int] = []
        self.stdin_writer = -1

    async def output(self, name: str, src_fd: int, uri: str) -> None:
        try:
            dst, keep = open_output(uri)
        except BaseException:
            _close(src_fd)
            raise
        if keep >= 0:
            self.keepalive.append(keep)
        pump = _Pump(name)
        self.pumps.append(pump)
        await pump.start(src_fd, dst)

    async def input(self, uri: str, dst_fd: int) -> None:
        try:
            src, self.stdin_writer = open_input(uri)
        except BaseException:
            _close(dst_fd)
            raise
        pump = _Pump("stdin")
        await pump.start(src, dst_fd)
        # stdin is not waited for on drain: it ends when the client says so.

    def close_stdin(self) -> None:
        fd, self.stdin_writer = self.stdin_writer, -1
        _close(fd)

    async def drain(self, grace: float) -> bool:
        """Wait for the output copies to finish; False on timeout."""
        waiting = [p.done for p in self.pumps if not p.done.done()]
        if not waiting:
            return True
        _done, pending = await asyncio.wait(waiting, timeout=grace)
        return not pending

    def close(self) -> None:
        for pump in self.pumps:
            pump.stop()
        self.close_stdin()
        for fd in self.keepalive:
            _close(fd)
        self.keepalive.clear()


class ProcessIO:
    """Pipes between runc and the client's stdio (the non-terminal case)."""

    def __init__(self, stdio: Stdio) -> None:
        self.stdio = stdio
        # (ours, runc's) per stream; -1 when unused
        self._stdin = (-1, -1)
        self._stdout = (-1, -1)
        self._stderr = (-1, -1)
        self._copies = _Copies()

    @classmethod
    def create(cls, stdio: Stdio, uid: int = 0, gid: int = 0) -> ProcessIO:
        """Validate the URIs and make the pipes (owned by ``uid``/``gid`` on runc's side)."""
        for uri in (stdio.stdout, stdio.stderr):
            _parse(uri)
        if stdio.stdin:
            _parse(stdio.stdin)
        pio = cls(stdio)
        try:
            if stdio.stdin:
                r, w = os.pipe2(os.O_CLOEXEC)
                pio._stdin = (w, r)
            if stdio.stdout:
                r, w = os.pipe2(os.O_CLOEXEC)
                pio._stdout = (r, w)
            if stdio.stderr:
                r, w = os.pipe2(os.O_CLOEXEC)
                pio._stderr = (r, w)
            if uid or gid:
                for _ours, theirs in (pio._stdin, pio._stdout, pio._stderr):
                    if theirs >= 0:
                        os.fchown(theirs, uid, gid)
        except BaseException:
            pio.close()
            raise
        return pio

    def runc_stdio(self) -> StdioFds:
        if self.stdio.is_null():
            return NULL_STDIO
        return tuple(fd if fd >= 0 else None for _o, fd in (self._stdin, self._stdout, self._stderr))  # type: ignore[return-value]

    def close_runc_side(self) -> None:
        """Drop our copies of runc's ends once runc has them, so EOF can happen."""
        for attr in ("_stdin", "_stdout", "_stderr"):
            ours, theirs = getattr(self, attr)
            _close(theirs)
            setattr(self, attr, (ours, -1))

    async def start(self) -> None:
        """Open the client's side and start copying; takes ownership of our pipe ends."""
        ours_in, self._stdin = self._stdin[0], (-1, self._stdin[1])
        ours_out, self._stdout = self._stdout[0], (-1, self._stdout[1])
        ours_err, self._stderr = self._stderr[0], (-1, self._stderr[1])
        try:
            if ours_out >= 0:
                fd, ours_out = ours_out, -1
                await self._copies.output("stdout", fd, self.stdio.stdout)
            if ours_err >= 0:
                fd, ours_err = ours_err, -1
                await self._copies.output("stderr", fd, self.stdio.stderr)
            if ours_in >= 0:
                fd, ours_in = ours_in, -1
                await self._copies.input(self.stdio.stdin, fd)
        finally:
            for fd in (ours_in, ours_out, ours_err):
                _close(fd)

    def close_stdin(self) -> None:
        self._copies.close_stdin()

    async def drain(self, grace: float) -> bool:
        return await self._copies.drain(grace)

    def close(self) -> None:
        for ours, theirs in (self._stdin, self._stdout, self._stderr):
            _close(ours)
            _close(theirs)
        self._stdin = self._stdout = self._stderr = (-1, -1)
        self._copies.close()


# -- terminals ---------------------------------------------------------------------------------


class ConsoleSocket:
    """A listening Unix socket for runc's ``--console-socket``, in a private temp directory."""

    def __init__(self, directory: str, sock: socket.socket) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "pty.sock")
        self._sock = sock

    @classmethod
    def create(cls, parent: str | None = None) -> ConsoleSocket:
        directory = make_temp_dir("arun-pty-", parent)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(os.path.join(directory, "pty.sock"))
            sock.listen(1)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            remove_tree(directory)
            raise
        return cls(directory, sock)

    async def receive_master(self) -> int:
        """Accept runc's connection and return the pty master fd it sends (within 30 s)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(30.0):
            conn, _ = await loop.sock_accept(self._sock)
            with conn:
                conn.setblocking(False)
                while True:
                    await readable(conn.fileno())
                    try:
                        fds = array.array("i")
                        msg, ancdata, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize * 4))
                    except BlockingIOError:
                        continue
                    received: list[int] = []
                    for level, kind, data in ancdata:
                        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                            usable = len(data) - len(data) % fds.itemsize
                            fds.frombytes(data[:usable])
                            received.extend(fds)
                    if not received:
                        raise errdefs.UnknownError(f"console socket: no pty master received ({msg[:100]!r})")
                    for extra in received[1:]:
                        os.close(extra)
                    os.set_inheritable(received[0], False)
                    return received[0]

    def close(self) -> None:
        self._sock.close()
        remove_tree(self.directory)


class Console:
    """A pty master received from runc, copied to and from the client's FIFOs."""

    def __init__(self, master: int) -> None:
        self.master = master
        self._copies = _Copies()
        self._out: _Pump | None = None

    async def start(self, stdio: Stdio) -> None:
        if stdio.stdout:
            await self._copies.output("console", os.dup(self.master), stdio.stdout)
            self._out = self._copies.pumps[-1]
        if stdio.stdin:
            await self._copies.input(stdio.stdin, os.dup(self.master))

    def resize(self, width: int, height: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def size(self) -> tuple[int, int]:
        """(width, height)."""
        rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(self.master, termios.TIOCGWINSZ, b"\0" * 8))
        return cols, rows

    def close_stdin(self) -> None:
        self._copies.close_stdin()

    def shutdown(self) -> None:
        """The process exited: copy what the pty holds now and stop, even if a leftover process
        still has the slave open (the Go shim's ShutdownConsole)."""
        if self._out is not None:
            self._out.drain_now()

    async def drain(self, grace: float) -> bool:
        return await self._copies.drain(grace)

    def close(self) -> None:
        self._copies.close()
        _close(self.master)
        self.master = -1
