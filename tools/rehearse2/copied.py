"""How many pages a zygote-forked shim no longer shares with its template after serving a pod,
with the zygote's rehearsal in each mode (``ARUN_ZYGOTE_REHEARSAL``), interleaved.

One pod at a time, the way the PSS benchmark starts them (the task manager, a real busybox
container through runc, the events sink), but no KSM marking (``merge_memory=False``), so a page
is either the template's physical page or the shim's own copy. Per shim: pages at an address the
template also has resident whose frame differs (``copied``), pages only the shim has (``new``),
and ``Private_Dirty`` (smaps_rollup) — once running and settled, and again once the container
was killed and waited for (a delete ends the shim).

    PYTHONPATH=src python tools/rehearse2/copied.py ROUNDS basic full     (root, runc)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "shimperf"))
from pagediff import classified_pages


def compare(shim: int, template: int) -> dict[str, int]:
    out = {"copied": 0, "new": 0, "shared": 0, "copied_anon": 0, "copied_file": 0}
    for name, kind in classified_pages(shim, template):
        out[kind] += 1
        if kind == "copied":
            out["copied_file" if name.startswith("/") else "copied_anon"] += 1
    return out


def private_dirty_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])
    return -1


async def one(mode: str, settle: float) -> dict[str, Any]:
    from arun import namespaces
    from arun.benchmarks import shim_bench as sb
    from arun.core.runtime import RUNTIME_ARUN

    os.environ["ARUN_ZYGOTE_REHEARSAL"] = mode
    res: dict[str, Any] = {"mode": mode}
    async with (
        sb.pod_bench_env() as (senv, base, rootfs),
        sb.running_pods(
            senv, base, rootfs, RUNTIME_ARUN, 1, prefix="rehearse2", merge_memory=False
        ) as running,
    ):
        res["zygote_ready_ms"] = running.zygote_ready_ms
        assert running.shims.zygote is not None
        template = running.shims.zygote.pid
        (shim,) = running.pids
        await asyncio.sleep(settle)
        res["running"] = compare(shim, template)
        res["running"]["private_dirty_kib"] = private_dirty_kib(shim)
        with namespaces.use(running.ns):
            for task in await running.tm.tasks():
                await task.kill(9)
                await task.wait()
        await asyncio.sleep(0.5)
        res["exited"] = compare(shim, template)
        res["exited"]["private_dirty_kib"] = private_dirty_kib(shim)
    return res


async def main(rounds: int, modes: list[str]) -> None:
    for r in range(rounds):
        for mode in modes if r % 2 == 0 else list(reversed(modes)):
            print(json.dumps(await one(mode, 2.0)), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:] or ["basic", "full"]))
