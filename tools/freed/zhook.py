"""The zygote under tracemalloc, for probe.py: ``python -X tracemalloc=N zhook.py FD``.

Each spare dumps a snapshot of the traced heap first thing after its fork (the template's
objects as the spare inherits them) to $FREED_OUT/before.PID, and another on SIGUSR2 to
$FREED_OUT/after.PID."""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc

from arun.runtime import zygote

OUT = os.environ["FREED_OUT"]
_orig = zygote._spare_main


def _dump(name: str) -> None:
    snap = tracemalloc.take_snapshot()
    snap.dump(f"{OUT}/{name}.{os.getpid()}")


def _spare(sock: object) -> int:
    _dump("before")
    signal.signal(signal.SIGUSR2, lambda *_: _dump("after"))
    return _orig(sock)  # type: ignore[arg-type]


zygote._spare_main = _spare
sys.exit(zygote.main(sys.argv[1:]))
