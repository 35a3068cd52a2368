"""Which of the template's objects a shim frees, and how many template pages it stops sharing (root).

Starts a zygote (no KSM), one busybox pod through the real task manager and runc, lets the shim
settle, then:

  pages    anon pages present in both the shim and the zygote (the template) at the same virtual
           address whose physical page differs (copy-on-write broken), and the shim's
           Private_Dirty (smaps_rollup);
  --trace  runs the zygote under ``-X tracemalloc=N`` (tools/freed/zhook.py) and prints the
           allocation tracebacks whose traces the spare had right after its fork and the settled
           shim no longer has (template objects the shim freed), largest first.

    PYTHONPATH=src python tools/freed/probe.py [--trace 25] [--settle 20] [NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "shimdirty"))

import account  # noqa: E402


def private_dirty(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    return -1


def unshared(shim: int, template: int) -> dict[str, int]:
    s, t = account.pages(shim), account.pages(template)
    out: dict[str, int] = {}
    for va, (pfn, kind) in s.items():
        tp = t.get(va)
        if tp is None:
            out["new:" + kind] = out.get("new:" + kind, 0) + 1
        elif tp[0] != pfn:
            out["cow:" + kind] = out.get("cow:" + kind, 0) + 1
    return out


def unique(a: int, b: int, template: int) -> dict[str, int]:
    """Pages shim ``a`` wrote (copied on write from the template, or new) split by whether shim
    ``b`` has the same bytes at that address (KSM could merge them) or not (they stay private)."""
    pa, pb, t = account.pages(a), account.pages(b), account.pages(template)
    out = {"same": 0, "differ": 0, "only_a": 0}
    with open(f"/proc/{a}/mem", "rb", buffering=0) as ma, open(f"/proc/{b}/mem", "rb", buffering=0) as mb:
        for va, (pfn, kind) in pa.items():
            if not kind.startswith(("anon", "[heap]", "libpython:data", "[stack]")):
                continue
            tp = t.get(va)
            if tp is not None and tp[0] == pfn:
                continue  # still the template's page
            if va not in pb:
                out["only_a"] += 1
                continue
            try:
                ma.seek(va)
                x = ma.read(account.PAGE)
                mb.seek(va)
                y = mb.read(account.PAGE)
            except OSError:
                continue
            if x == y:
                out["same"] += 1
                continue
            out["differ"] += 1
            DIFFER.append(va)
            if kind == "anon" and tp is not None:
                out["differ:" + template_pool(template, va)] = (
                    out.get("differ:" + template_pool(template, va), 0) + 1
                )
    return out


DIFFER: list[int] = []  # the differing pages unique() found, for dirty_blocks


def template_pool(template: int, va: int) -> str:
    """What the template has at the obmalloc pool around va: a pool in use, an unused (emptied)
    pool, or no pool header."""
    base = va & ~(account.POOL - 1)
    try:
        h = account.read_mem(template, base, account.POOL_OVERHEAD)
    except OSError:
        return "unreadable"
    count = struct.unpack_from("<I", h)[0]
    if account._pool_header(template, va) is None:
        return "no-pool"
    return "pool-unused" if count == 0 else "pool-in-use"


def diff(out: Path, pid: int, top: int) -> None:
    befores = sorted(out.glob("before.*"))
    before = next((b for b in befores if b.name == f"before.{pid}"), None)
    after = out / f"after.{pid}"
    if before is None or not after.exists():
        print("no snapshots for", pid, [p.name for p in out.iterdir()])
        return
    b = tracemalloc.Snapshot.load(str(before))
    a = tracemalloc.Snapshot.load(str(after))
    flt = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, str(HERE / "*"))]
    b, a = b.filter_traces(flt), a.filter_traces(flt)
    stats = a.compare_to(b, "traceback")
    freed = [s for s in stats if s.count_diff < 0]
    freed.sort(key=lambda s: s.size_diff)
    print(
        f"\n== freed template objects in shim {pid}: {sum(-s.count_diff for s in freed)} blocks, "
        f"{sum(-s.size_diff for s in freed)} bytes, {len(freed)} tracebacks"
    )
    for s in freed[:top]:
        print(f"\n{-s.count_diff} blocks, {-s.size_diff} B:")
        for line in s.traceback.format(limit=25, most_recent_first=True)[:24]:
            print("   ", line)


async def run(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    from arun.benchmarks import shim_bench as sb
    from arun.core.runtime import RUNTIME_ARUN
    from arun.runtime import manager as mgr

    os.environ.update(env)
    out = Path(tempfile.mkdtemp(prefix="freed-", dir="/tmp"))
    if args.trace:
        wrapper = out / "python"
        wrapper.write_text(
            f"#!/bin/sh\nshift 2\n"  # drops "-m arun.runtime.zygote"
            f'exec {sys.executable} -X tracemalloc={args.trace} {HERE / "zhook.py"} "$@"\n'
        )
        wrapper.chmod(0o755)
        os.environ["FREED_OUT"] = str(out)

        class Traced(mgr.Zygote):  # type: ignore[misc,name-defined]
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(str(wrapper), *a[1:], **kw)

            async def start(self, timeout: float = 300.0) -> None:  # noqa: ASYNC109
                await super().start(timeout)

        mgr.Zygote = Traced  # type: ignore[attr-defined,misc]
    try:
        async with (
            sb.pod_bench_env() as (senv, base, rootfs),
            sb.running_pods(
                senv, base, rootfs, RUNTIME_ARUN, args.pods, prefix="freed", merge_memory=False
            ) as running,
        ):
            assert running.shims.zygote is not None and running.shims.zygote.ready, "no zygote"
            pids = sorted(set(running.pids))
            zpid = running.shims.zygote.pid
            await asyncio.sleep(args.settle)
            res = {"zygote": zpid, "shims": {}}
            for p in pids:
                res["shims"][p] = {"private_dirty": private_dirty(p), "unshared": unshared(p, zpid)}
            if len(pids) > 1:
                res["unique"] = unique(pids[0], pids[1], zpid)
                res["dirty_blocks"] = account.dirty_blocks(pids[0], zpid, DIFFER)
            if args.trace:
                for p in pids:
                    os.kill(p, signal.SIGUSR2)
                await asyncio.sleep(3)
                for p in pids:
                    diff(out, p, args.top)
            return res
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", type=int, default=0)
    ap.add_argument("--settle", type=float, default=20.0)
    ap.add_argument("--pods", type=int, default=2)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("env", nargs="*")
    args = ap.parse_args(argv)
    env = dict(e.split("=", 1) for e in args.env)
    res = asyncio.run(run(args, env))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
