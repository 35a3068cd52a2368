"""The shim log FIFO: lines from the shim become records of the daemon's log."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from arun.runtime.shimlog import ShimLog, parse_line


def test_parse_json_line() -> None:
    level, msg, extra = parse_line('{"time": "t", "level": "warning", "msg": "hi", "pid": 3}\n')
    assert (level, msg) == (logging.WARNING, "hi")
    assert extra == {"shim_pid": 3}


def test_parse_logrus_line() -> None:
    line = 'time="2024-01-01T00:00:00Z" level=error msg="failed to \\"x\\"" runtime=io.containerd.runc.v2'
    level, msg, extra = parse_line(line)
    assert (level, msg) == (logging.ERROR, 'failed to "x"')
    assert extra["shim_line"] == line
    assert parse_line("level=debug msg=plain")[:2] == (logging.DEBUG, "plain")


def test_parse_anything_else() -> None:
    assert parse_line("panic: boom") == (logging.INFO, "panic: boom", {})
    assert parse_line("{not json")[1] == "{not json"


async def test_fifo_lines_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="arun.shim")
    path = tmp_path / "log"
    shim_log = await ShimLog.open(path, "ns1", "c1")
    try:
        # The shim opens its end write-only; the daemon's read-write end means it never blocks.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b'{"level": "info", "msg": "one"}\npartial ')
        os.write(fd, b"line\n")
        os.close(fd)
        for _ in range(100):
            if len([r for r in caplog.records if r.name == "arun.shim"]) >= 2:
                break
            await asyncio.sleep(0.01)
        records = [r for r in caplog.records if r.name == "arun.shim"]
        assert [r.getMessage() for r in records] == ["one", "partial line"]
        assert all((r.namespace, r.id) == ("ns1", "c1") for r in records)  # type: ignore[attr-defined]
        # After the writer closed, the FIFO still works (no EOF: the daemon holds a writer too).
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"again\n")
        os.close(fd)
        for _ in range(100):
            if len([r for r in caplog.records if r.name == "arun.shim"]) >= 3:
                break
            await asyncio.sleep(0.01)
        assert [r for r in caplog.records if r.name == "arun.shim"][-1].getMessage() == "again"
    finally:
        shim_log.close()
    # Re-opening an existing FIFO works (a restarted daemon).
    again = await ShimLog.open(path, "ns1", "c1")
    again.close()
