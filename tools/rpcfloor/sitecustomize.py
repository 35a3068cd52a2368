"""Benchmark aid, not part of arun: copy into a copy of ``src`` so ``python -m arun daemon`` imports it.

SIGUSR1 puts the daemon into variant "a" (the change under test undone), SIGUSR2 into "b" (as
committed); ``RF_TOGGLE`` names the change: ``hold`` (coalesce's hold during data_received) or
``hpacklog`` (hpack's loggers' ``debug``). A ``gc.callbacks`` timer counts collections per
generation; on every switch the counts and seconds go to ``$RF_OUT/<pid>.gc`` (JSON).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import time
from typing import Any

_WHAT = os.environ.get("RF_TOGGLE", "")
_stats: dict[str, list[float]] = {"seconds": [0.0, 0.0, 0.0], "count": [0, 0, 0]}
_started = [0.0]
_saved: dict[str, Any] = {}


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _stats["seconds"][info["generation"]] += time.perf_counter() - _started[0]
        _stats["count"][info["generation"]] += 1


def _switch(variant: str) -> None:
    if _WHAT == "hold":
        from arun.server import coalesce

        committed = _saved.setdefault("hold", coalesce.Coalescing.data_received)

        def unheld(self: coalesce.Coalescing, data: bytes) -> None:
            self.inner.data_received(data)

        coalesce.Coalescing.data_received = committed if variant == "b" else unheld  # type: ignore[method-assign]
    elif _WHAT == "hpacklog":
        for name in ("hpack.hpack", "hpack.table"):
            logger = logging.getLogger(name)
            if variant == "a":
                logger.__dict__.pop("debug", None)
            else:
                logger.debug = "".format  # type: ignore[method-assign,assignment]
    out = os.environ.get("RF_OUT")
    if out:
        with open(f"{out}/{os.getpid()}.gc", "w") as fh:
            json.dump(_stats, fh)


gc.callbacks.append(_gc_timer)
if _WHAT or os.environ.get("RF_OUT"):
    signal.signal(signal.SIGUSR1, lambda *_: _switch("a"))
    signal.signal(signal.SIGUSR2, lambda *_: _switch("b"))
