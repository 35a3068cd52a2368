from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from arun.cri.io.logger import CRILogWriter, LogFile, rfc3339nano


def entries(path: Path) -> list[tuple[str, str, str]]:
    out = []
    for line in path.read_bytes().decode().split("\n")[:-1]:
        ts, stream, tag, content = line.split(" ", 3)
        datetime.fromisoformat(ts.replace("Z", "+00:00")[:26] + ("+00:00" if ts.endswith("Z") else ts[-6:]))
        out.append((stream, tag, content))
    return out


def test_rfc3339nano() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)", rfc3339nano())
    # Trailing zeros of the fraction are dropped, as Go does; no fraction when it is zero.
    assert ".5" in rfc3339nano(1_700_000_000_500_000_000) and ".50" not in rfc3339nano(
        1_700_000_000_500_000_000
    )
    assert "." not in rfc3339nano(1_700_000_000_000_000_000)


def test_lines_streams_and_partial(tmp_path: Path) -> None:
    f = LogFile(str(tmp_path / "c.log"))
    out, err = CRILogWriter(f, "stdout", 10), CRILogWriter(f, "stderr", 10)
    out.feed(b"hello\nwor")
    err.feed(b"oops\r\n")
    out.feed(b"ld\n")
    out.feed(b"0123456789abcdefghijXYZ\n")
    out.feed(b"tail")
    out.close()
    err.close()
    f.close()
    assert entries(tmp_path / "c.log") == [
        ("stdout", "F", "hello"),
        ("stderr", "F", "oops"),
        ("stdout", "F", "world"),
        ("stdout", "P", "0123456789"),
        ("stdout", "P", "abcdefghij"),
        ("stdout", "F", "XYZ"),
        ("stdout", "P", "tail"),
    ]


def test_line_exactly_max_len_is_full(tmp_path: Path) -> None:
    f = LogFile(str(tmp_path / "c.log"))
    w = CRILogWriter(f, "stdout", 4)
    w.feed(b"abcd\n")
    w.feed(b"ab\r")
    w.feed(b"\n")
    f.close()
    assert entries(tmp_path / "c.log") == [("stdout", "F", "abcd"), ("stdout", "F", "ab")]


def test_reopen_writes_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    f = LogFile(str(path))
    w = CRILogWriter(f, "stdout")
    w.feed(b"one\n")
    path.rename(tmp_path / "c.log.1")
    f.reopen()
    w.feed(b"two\n")
    f.close()
    w.feed(b"dropped after close\n")
    assert [e[2] for e in entries(tmp_path / "c.log.1")] == ["one"]
    assert [e[2] for e in entries(path)] == ["two"]
