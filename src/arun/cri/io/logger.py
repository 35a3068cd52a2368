"""Container logs in the CRI format kubelet reads.

One line per log entry::

    <RFC 3339 timestamp with nanoseconds> <stdout|stderr> <F|P> <content>\\n

``F`` ends a line; ``P`` is a part of a line longer than the maximum line size
(or one cut short by the end of the stream). A trailing ``\\r\\n`` counts as a
line end. Timestamps are local time in Go's ``RFC3339Nano`` layout (trailing
zeros of the fraction dropped, ``Z`` for UTC).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

log = logging.getLogger(__name__)

TAG_FULL = b"F"
TAG_PARTIAL = b"P"


def rfc3339nano(ns: int | None = None) -> str:
    """``ns`` (default: now) as Go formats ``time.RFC3339Nano`` in local time."""
    if ns is None:
        ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    tm = time.localtime(secs)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", tm)
    fraction = f".{frac:09d}".rstrip("0") if frac else ""
    off = tm.tm_gmtoff or 0
    if off == 0:
        zone = "Z"
    else:
        sign = "+" if off > 0 else "-"
        off = abs(off)
        zone = f"{sign}{off // 3600:02d}:{off % 3600 // 60:02d}"
    return f"{base}{fraction}{zone}"


class LogFile:
    """The log file of one container, shared by its stdout and stderr writers.

    Writes are appends of whole entries. ``reopen()`` starts a new file at the
    same path (after kubelet renamed the old one away for rotation).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self.open()

    def open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        old, self._fd = self._fd, fd
        if old >= 0:
            os.close(old)

    def reopen(self) -> None:
        self.open()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            return
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as e:
            log.warning("failed to write container log %s: %s", self.path, e)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class CRILogWriter:
    """Turns one stream's bytes into CRI log entries on a :class:`LogFile`."""

    def __init__(self, file: LogFile, stream: str, max_len: int = 16 * 1024) -> None:
        self.file = file
        self.stream = stream.encode()
        self.max_len = max_len if max_len > 0 else 0
        self._buf = bytearray()

    def _entry(self, tag: bytes, content: bytes | bytearray) -> None:
        header = f"{rfc3339nano()} ".encode() + self.stream + b" " + tag + b" "
        self.file.write(header + bytes(content) + b"\n")

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            end = nl
            if end > start and buf[end - 1] == 0x0D:
                end -= 1
            self._line(buf[start:end], TAG_FULL)
            start = nl + 1
        del buf[:start]
        # A line still open but already longer than the limit: emit its full-size parts now.
        if self.max_len:
            while len(buf) > self.max_len:
                cut = self.max_len
                # Never split a "\r\n" pair across parts: the "\r" waits for the next byte.
                if buf[cut - 1] == 0x0D:
                    cut -= 1
                    if cut == 0:
                        break
                self._entry(TAG_PARTIAL, buf[:cut])
                del buf[:cut]

    def _line(self, line: bytes | bytearray, tag: bytes) -> None:
        if self.max_len:
            while len(line) > self.max_len:
                self._entry(TAG_PARTIAL, line[: self.max_len])
                line = line[self.max_len :]
        self._entry(tag, line)

    def close(self) -> None:
        """End of stream: an unterminated last line is written as a partial entry."""
        if self._buf:
            self._line(self._buf, TAG_PARTIAL)
            self._buf.clear()
