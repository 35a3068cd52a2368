"""Stdio copies between runc's pipes and the client's FIFOs, with real FIFOs in a temp dir."""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import termios
from pathlib import Path

import pytest

from arun import errdefs
from arun.shim.process.io import Console, ConsoleSocket, ProcessIO, Stdio


async def read_until_eof(fd: int, limit: float = 10) -> bytes:
    """Read a non-blocking fd until EOF (the client's side of a FIFO)."""
    chunks = []
    async with asyncio.timeout(limit):
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            if not data:
                return b"".join(chunks)
            chunks.append(data)


async def read_some(fd: int, want: bytes, limit: float = 10) -> bytes:
    got = b""
    async with asyncio.timeout(limit):
        while want not in got:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            except OSError:
                break
            if not data:
                break
            got += data
    return got


def fifo(tmp_path: Path, name: str) -> str:
    path = str(tmp_path / name)
    os.mkfifo(path)
    return path


async def test_stdout_and_stderr_reach_the_fifos_and_end_with_eof(tmp_path: Path) -> None:
    out, err = fifo(tmp_path, "out"), fifo(tmp_path, "err")
    # the client opens its read ends first, non-blocking, as cio does
    out_r = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    err_r = os.open(err, os.O_RDONLY | os.O_NONBLOCK)
    pio = ProcessIO.create(Stdio(stdout=out, stderr=err))
    stdin_fd, stdout_fd, stderr_fd = pio.runc_stdio()
    assert stdin_fd is None and stdout_fd is not None and stderr_fd is not None
    # "runc" keeps copies; the shim then drops its own
    c_out, c_err = os.dup(stdout_fd), os.dup(stderr_fd)
    pio.close_runc_side()
    await pio.start()
    os.write(c_out, b"hello out\n" * 1000)
    os.write(c_err, b"hello err\n")
    os.close(c_out)
    os.close(c_err)
    got_out, got_err = await asyncio.gather(read_until_eof(out_r), read_until_eof(err_r))
    assert got_out == b"hello out\n" * 1000
    assert got_err == b"hello err\n"
    assert await pio.drain(5)
    pio.close()
    os.close(out_r)
    os.close(err_r)


async def test_reader_leaving_does_not_break_the_copy(tmp_path: Path) -> None:
    out = fifo(tmp_path, "out")
    out_r = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    pio = ProcessIO.create(Stdio(stdout=out))
    c_out = os.dup(pio.runc_stdio()[1])  # type: ignore[arg-type]
    pio.close_runc_side()
    await pio.start()
    os.close(out_r)  # the client goes away (ctr detached)
    os.write(c_out, b"into the void\n")  # no EPIPE: the shim holds a read end
    await asyncio.sleep(0.05)
    out_r = os.open(out, os.O_RDONLY | os.O_NONBLOCK)  # a new client attaches
    os.write(c_out, b"seen\n")
    assert b"seen\n" in await read_some(out_r, b"seen\n")
    os.close(c_out)
    assert await pio.drain(5)
    pio.close()
    os.close(out_r)


async def test_stdin_ends_only_after_close_io_and_client_close(tmp_path: Path) -> None:
    path = fifo(tmp_path, "in")
    pio = ProcessIO.create(Stdio(stdin=path))
    c_in = os.dup(pio.runc_stdio()[0])  # type: ignore[arg-type]
    pio.close_runc_side()
    await pio.start()
    os.set_blocking(c_in, False)
    client = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.write(client, b"typed\n")
    assert await read_some(c_in, b"typed\n") == b"typed\n"
    os.close(client)  # the client hung up, but the shim's writer keeps stdin open
    await asyncio.sleep(0.1)
    with pytest.raises(BlockingIOError):
        os.read(c_in, 100)
    pio.close_stdin()  # CloseIO
    assert await read_until_eof(c_in) == b""
    os.close(c_in)
    pio.close()


async def test_file_scheme_appends(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "out.log"
    pio = ProcessIO.create(Stdio(stdout=f"file://{log}", stderr=f"file://{log}"))
    _in, o, e = pio.runc_stdio()
    c_out, c_err = os.dup(o), os.dup(e)  # type: ignore[arg-type]
    pio.close_runc_side()
    await pio.start()
    os.write(c_out, b"one\n")
    os.close(c_out)
    await asyncio.sleep(0.05)
    os.write(c_err, b"two\n")
    os.close(c_err)
    assert await pio.drain(5)
    pio.close()
    assert log.read_bytes() == b"one\ntwo\n"


def test_bad_schemes_are_refused() -> None:
    with pytest.raises(errdefs.UnimplementedError):
        ProcessIO.create(Stdio(stdout="binary:///usr/bin/logger"))
    with pytest.raises(errdefs.InvalidArgumentError):
        ProcessIO.create(Stdio(stdout="http://example.com/x"))


def test_null_io() -> None:
    pio = ProcessIO.create(Stdio())
    assert pio.runc_stdio() == (None, None, None)
    pio.close()


async def test_console_copies_resizes_and_ends(tmp_path: Path) -> None:
    out, inp = fifo(tmp_path, "out"), fifo(tmp_path, "in")
    out_r = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    master, slave = os.openpty()
    console = Console(master)
    await console.start(Stdio(stdin=inp, stdout=out, terminal=True))
    os.write(slave, b"from the container\n")
    assert b"from the container" in await read_some(out_r, b"container")
    client = os.open(inp, os.O_WRONLY | os.O_NONBLOCK)
    os.write(client, b"typed\n")
    os.set_blocking(slave, False)
    assert b"typed" in await read_some(slave, b"typed")
    console.resize(120, 40)
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))
    assert (cols, rows) == (120, 40)
    os.close(slave)  # the container's last holder of the tty exits
    assert await console.drain(5)
    os.close(client)
    console.close()
    os.close(out_r)


async def test_console_shutdown_when_tty_stays_open(tmp_path: Path) -> None:
    out = fifo(tmp_path, "out")
    out_r = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    master, slave = os.openpty()
    console = Console(master)
    await console.start(Stdio(stdout=out, terminal=True))
    os.write(slave, b"last words\n")
    await asyncio.sleep(0.05)
    console.shutdown()  # the process exited, but a leftover still holds the slave
    assert await console.drain(5)
    assert b"last words" in await read_until_eof(out_r)
    console.close()
    os.close(slave)
    os.close(out_r)


async def test_console_socket_receives_the_master() -> None:
    cs = ConsoleSocket.create()
    master, slave = os.openpty()
    try:

        def runc_side() -> None:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(cs.path)
                socket.send_fds(s, [b"/dev/pts/x"], [master])

        await asyncio.to_thread(runc_side)
        got = await cs.receive_master()
        assert os.path.samestat(os.fstat(got), os.fstat(master))
        os.close(got)
    finally:
        cs.close()
        os.close(master)
        os.close(slave)
    assert not Path(cs.directory).exists()
