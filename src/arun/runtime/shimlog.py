"""The shim log: a FIFO in the bundle whose lines the daemon re-emits in its own log.

The daemon creates ``<bundle>/log`` and opens it read-write and non-blocking before
the shim starts (as containerd does), so the shim's ``open(O_WRONLY)`` never blocks
and the daemon never sees end-of-file while the shim restarts or is replaced. Lines
are JSON objects from arun's shim (``{"level": …, "msg": …}``) or logrus text from Go
shims (``time=… level=info msg="…"``); each becomes one record of the
``arun.shim`` logger carrying the task's namespace and id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

log = logging.getLogger("arun.shim")

MAX_LINE = 64 << 10
_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "critical": logging.CRITICAL,
}
_LOGRUS_LEVEL = re.compile(r'(?:^|\s)level=("?)(\w+)\1')
_LOGRUS_MSG = re.compile(r'(?:^|\s)msg="((?:[^"\\]|\\.)*)"|(?:^|\s)msg=(\S+)')


def parse_line(line: str) -> tuple[int, str, dict[str, Any]]:
    """(level, message, extra fields) of one shim log line."""
    line = line.rstrip("\r\n")
    if line.startswith("{"):
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        if isinstance(data, dict):
            level = _LEVELS.get(str(data.pop("level", "info")).lower(), logging.INFO)
            msg = str(data.pop("msg", ""))
            data.pop("time", None)
            extra = {f"shim_{k}": v for k, v in data.items() if isinstance(k, str)}
            return level, msg, extra
    m = _LOGRUS_LEVEL.search(line)
    if m is not None:
        level = _LEVELS.get(m.group(2).lower(), logging.INFO)
        mm = _LOGRUS_MSG.search(line)
        msg = line if mm is None else (mm.group(1) or mm.group(2) or "").replace('\\"', '"')
        return level, msg, {"shim_line": line} if mm is not None else {}
    return logging.INFO, line, {}


class _Reader(asyncio.Protocol):
    def __init__(self, namespace: str, id: str) -> None:
        self.namespace = namespace
        self.id = id
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > MAX_LINE:
                    self._emit(self.buf)
                    self.buf = b""
                return
            line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
            self._emit(line)

    def _emit(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            return
        level, msg, extra = parse_line(text)
        extra.update({"namespace": self.namespace, "id": self.id})
        log.log(level, "%s", msg, extra=extra)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = b""


class ShimLog:
    """The daemon's end of one bundle's log FIFO."""

    def __init__(self, transport: asyncio.ReadTransport | None, fd: int) -> None:
        self._transport = transport
        self._fd = fd

    @classmethod
    async def open(cls, path: Path, namespace: str, id: str) -> ShimLog:
        """Create (if needed) and open the FIFO, and start copying its lines."""
        try:
            os.mkfifo(path, 0o700)
        except FileExistsError:
            if not stat.S_ISFIFO(os.stat(path).st_mode):
                raise
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(fd, "rb", buffering=0)
        try:
            transport, _ = await loop.connect_read_pipe(lambda: _Reader(namespace, id), pipe)
        except BaseException:
            pipe.close()
            raise
        return cls(transport, fd)

    def close(self) -> None:
        t, self._transport = self._transport, None
        if t is not None:
            with contextlib.suppress(Exception):
                t.close()
