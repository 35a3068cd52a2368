"""Page-level accounting of arun's shims and their helpers (root).

Starts PODS busybox pods the way the PSS benchmark does (a merging zygote, an events sink, the
real task manager), waits until PSS settles, then reads every present page of the shims and the
helpers (zygote, template, spares) from /proc/PID/pagemap, /proc/kpagecount and /proc/kpageflags
and reports, per process kind and per mapping kind, how many KiB are:

  private   mapped by this process alone (kpagecount 1, not KSM)
  ksm       a KSM-merged page
  ours      shared only among our processes (the shims and helpers)
  helpers   shared only among helpers (no shim maps it)
  other     also mapped by processes that are not ours (libc text, ...)
  pss       the process's proportional share (4 KiB / kpagecount per page)

then looks inside the shims' private anonymous pages: obmalloc pools (by size class), glibc
heap, the same page in two shims (how many bytes differ, and whether the differing words sit
where an object's reference count is).

    PYTHONPATH=src python tools/shimdirty/account.py [--pods 20] [--settle 150] [--json OUT]

Environment variables given as NAME=VALUE arguments after ``--`` are set for the zygote (and so
for every shim) before it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

PAGE = 4096
KPF_KSM = 1 << 21
KPF_ZERO = 1 << 24
KPF_THP = 1 << 22
POOL = 16384  # obmalloc pool size (3.10+, 64-bit: large pools)
POOL_OVERHEAD = 48


# -- reading the kernel's page tables ------------------------------------------------------------


def mappings(pid: int) -> list[tuple[int, int, str, str]]:
    """(start, end, perms, kind) of every mapping with resident pages."""
    out = []
    cur: list[Any] | None = None
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            f = line.split()
            if "-" in f[0] and not f[0].endswith(":"):
                a, b = f[0].split("-")
                path = f[5] if len(f) > 5 else ""
                cur = [int(a, 16), int(b, 16), f[1], _kind(path, f[1]), 0]
                out.append(cur)
            elif f[0] == "Rss:" and cur is not None:
                cur[4] = int(f[1])
    return [(a, b, p, k) for a, b, p, k, rss in out if rss]


def _kind(path: str, perms: str) -> str:
    if not path:
        return "anon"
    if path.startswith("["):
        return path
    name = path.rsplit("/", 1)[-1]
    if "libpython" in name:
        name = "libpython"
    elif name.endswith(".so") or ".so." in name:
        name = "lib:" + name.split(".so")[0]
    elif name.startswith("python"):
        name = "python-exe"
    else:
        name = "file"
    if "x" in perms:
        return name + ":text"
    if "w" in perms:
        return name + ":data"
    return name + ":ro"


def pages(pid: int) -> dict[int, tuple[int, str]]:
    """vaddr -> (pfn, mapping kind) of every present page."""
    out: dict[int, tuple[int, str]] = {}
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        for a, b, _perms, kind in mappings(pid):
            n = (b - a) // PAGE
            raw = os.pread(fd, n * 8, (a // PAGE) * 8)
            for i, (e,) in enumerate(struct.iter_unpack("<Q", raw)):
                if e >> 63 & 1:
                    out[a + i * PAGE] = (e & ((1 << 55) - 1), kind)
    finally:
        os.close(fd)
    return out


class Kpages:
    def __init__(self) -> None:
        self.count_fd = os.open("/proc/kpagecount", os.O_RDONLY)
        self.flags_fd = os.open("/proc/kpageflags", os.O_RDONLY)

    def count(self, pfn: int) -> int:
        return int(struct.unpack("<Q", os.pread(self.count_fd, 8, pfn * 8))[0])

    def flags(self, pfn: int) -> int:
        return int(struct.unpack("<Q", os.pread(self.flags_fd, 8, pfn * 8))[0])


def read_mem(pid: int, addr: int, size: int) -> bytes:
    if not 0 <= addr < 1 << 63:
        raise OSError(f"bad address {addr:#x}")
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as fh:
        fh.seek(addr)
        return fh.read(size)


# -- the accounting ------------------------------------------------------------------------------


def account(groups: dict[str, list[int]]) -> dict[str, Any]:
    """groups: kind ("shim", "zygote", "template", "spare") -> pids."""
    kp = Kpages()
    role = {pid: g for g, pids in groups.items() for pid in pids}
    maps = {pid: pages(pid) for pid in role}
    users: dict[int, set[int]] = collections.defaultdict(set)
    for pid, pm in maps.items():
        for pfn, _k in pm.values():
            users[pfn].add(pid)
    kcount = {pfn: kp.count(pfn) for pfn in users}
    kflags = {pfn: kp.flags(pfn) for pfn in users}
    report: dict[str, Any] = {}
    for g, pids in groups.items():
        table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for pid in pids:
            for _va, (pfn, kind) in maps[pid].items():
                c, fl = kcount[pfn], kflags[pfn]
                t = table[kind]
                t["rss"] += 4
                t["pss"] += 4 / max(c, 1)
                if fl & KPF_ZERO:
                    t["zero"] += 4
                elif fl & KPF_KSM:
                    t["ksm"] += 4
                elif c <= 1:
                    t["private"] += 4
                elif c == len(users[pfn]):
                    if all(role[p] != "shim" for p in users[pfn]):
                        t["helpers"] += 4
                    else:
                        t["ours"] += 4
                else:
                    t["other"] += 4
        report[g] = {k: {n: round(v / len(pids), 1) for n, v in t.items()} for k, t in table.items()}
    report["_per_pod"] = per_pod(groups, role, maps, users, kcount, kflags)
    report["_threads"] = {str(pid): len(os.listdir(f"/proc/{pid}/task")) for pid in role}
    report["_ksm_pages"] = {
        n: int(Path(f"/sys/kernel/mm/ksm/{n}").read_text())
        for n in ("pages_shared", "pages_sharing", "full_scans")
    }
    shims = groups.get("shim", [])
    # Since zyg2 the zygote itself forks the spares: it is the template.
    template = (groups.get("template") or groups.get("zygote") or [0])[0]
    if len(shims) >= 2:
        report["_private_anon"] = inspect_private(shims, maps, kcount, kflags, template)
    return report


def per_pod(
    groups: dict[str, list[int]],
    role: dict[int, str],
    maps: dict[int, dict[int, tuple[int, str]]],
    users: dict[int, set[int]],
    kcount: dict[int, int],
    kflags: dict[int, int],
) -> dict[str, float]:
    """The benchmark's figure (the PSS of all our processes / pods) split by what each physical
    page is: every page our processes map is charged (its share of mappers that are ours) once."""
    pods = len(groups.get("shim", [])) or 1
    kind_of: dict[int, str] = {}
    for _pid, pm in maps.items():
        for pfn, kind in pm.values():
            kind_of.setdefault(pfn, kind)
    out: collections.Counter[str] = collections.Counter()
    for pfn, mappers in users.items():
        c = max(kcount[pfn], 1)
        share = 4 * len(mappers) / max(c, len(mappers))
        roles = {role[p] for p in mappers}
        kind = kind_of[pfn]
        kind = (
            "anon"
            if kind in ("anon", "[heap]")
            else "libpython:data"
            if kind == "libpython:data"
            else ("text/ro" if kind.endswith((":text", ":ro")) else "other-data")
        )
        if kflags[pfn] & KPF_ZERO:
            what = "zero"
        elif kflags[pfn] & KPF_KSM:
            what = (
                "ksm("
                + ("shims" if roles == {"shim"} else "shims+helpers" if "shim" in roles else "helpers")
                + ")"
            )
        elif c > len(mappers):
            what = "shared-with-others"
        elif len(mappers) == 1:
            what = "private:" + next(iter(roles))
        elif "shim" not in roles:
            what = "helpers-only"
        elif roles == {"shim"}:
            what = "shims-only"
        else:
            what = "image(shims+helpers)"
        out[f"{what} {kind}"] += share
    return {k: round(v / pods, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])} | {
        "TOTAL": round(sum(out.values()) / pods, 1)
    }


def _type_name(pid: int, addr: int, cache: dict[int, str | None]) -> str | None:
    """tp_name of the type object at addr, if it looks like one."""
    if addr in cache:
        return cache[addr]
    name = None
    if not 0x1000 < addr < 1 << 47:
        return None
    try:
        raw = read_mem(pid, addr, 32)
        tp_name = struct.unpack("<Q", raw[24:32])[0]
        if 0x1000 < tp_name < 1 << 48:
            s = read_mem(pid, tp_name, 64).split(b"\0", 1)[0]
            if s and all(32 < ch < 127 for ch in s):
                name = s.decode()
    except (OSError, ValueError):
        pass
    cache[addr] = name
    return name


def _block_type(
    mem: bytes, page_va: int, blk: int, pid: int, cache: dict[int, str | None]
) -> tuple[str, int]:
    """(type name, offset of the object in the block: 0, or 16 after a GC header) of the object in
    the block at blk, read from mem (the page at page_va); ("?", 0) when neither looks like one."""
    for hdr in (0, 16):
        lo = blk + hdr + 8 - page_va
        if lo < 0 or lo + 8 > len(mem):
            continue
        name = _type_name(pid, struct.unpack("<Q", mem[lo : lo + 8])[0], cache)
        if name:
            return name + ("(gc)" if hdr else ""), hdr
    return "?", 0


def dirty_blocks(pid: int, template: int, vas: list[int]) -> dict[str, Any]:
    """For private obmalloc pages of a shim, the blocks whose bytes differ from the template's
    copy of the page: what the template had there and what the shim has now (by type), and for
    blocks holding the same object in both, which word of it changed."""
    now: collections.Counter[str] = collections.Counter()
    before: collections.Counter[str] = collections.Counter()
    same_obj_words: collections.Counter[str] = collections.Counter()
    cache: dict[int, str | None] = {}
    tcache: dict[int, str | None] = {}
    for va in vas:
        pool = _pool_header(pid, va)
        if pool is None:
            continue
        size = pool[0]
        try:
            a = read_mem(pid, va, PAGE)
            b = read_mem(template, va, PAGE)
        except OSError:
            continue
        base = va & ~(POOL - 1)
        seen: set[int] = set()
        for w in range(0, PAGE, 8):
            if a[w : w + 8] == b[w : w + 8]:
                continue
            off = va + w - base
            if off < POOL_OVERHEAD:
                continue
            blk = base + POOL_OVERHEAD + (off - POOL_OVERHEAD) // size * size
            tnow, hdr = _block_type(a, va, blk, pid, cache)
            tbefore, _ = _block_type(b, va, blk, template, tcache)
            if blk not in seen:
                seen.add(blk)
                now[f"{size}:{tnow}"] += 1
                before[f"{size}:{tbefore}"] += 1
                if tnow == tbefore and tnow != "?":
                    now["(same object, changed)"] += 1
            if tnow == tbefore and tnow != "?":
                same_obj_words[f"{tnow}@{va + w - blk - hdr}"] += 1
    return {
        "blocks_now_by_type": dict(now.most_common(30)),
        "blocks_in_template_by_type": dict(before.most_common(30)),
        "same_object_changed_words": dict(same_obj_words.most_common(30)),
    }


def _pool_header(pid: int, va: int) -> tuple[int, int] | None:
    """(size class in bytes, arena index) when the 16 KiB-aligned pool around va has an obmalloc
    pool header, else None."""
    base = va & ~(POOL - 1)
    try:
        h = read_mem(pid, base, POOL_OVERHEAD)
    except OSError:
        return None
    _count, _free, _next, _prev, arenaindex, szidx, nextoffset, maxnext = struct.unpack("<IxxxxQQQIIII", h)
    size = (szidx + 1) * 16
    if szidx < 32 and maxnext == POOL - size and POOL_OVERHEAD <= nextoffset <= POOL:
        return size, arenaindex
    return None


def inspect_private(
    shims: list[int],
    maps: dict[int, dict[int, tuple[int, str]]],
    kcount: dict[int, int],
    kflags: dict[int, int],
    template: int,
) -> dict[str, Any]:
    """What a shim's private writable pages hold, from the first two shims (and the template)."""
    tmpl = maps.get(template, {})

    def private(pid: int) -> dict[int, str]:
        return {
            va: kind
            for va, (pfn, kind) in maps[pid].items()
            if kcount[pfn] <= 1 and not kflags[pfn] & (KPF_KSM | KPF_ZERO)
        }

    out: dict[str, Any] = {}
    by_class_all: collections.Counter[str] = collections.Counter()
    origin: collections.Counter[str] = collections.Counter()
    diffs: collections.Counter[str] = collections.Counter()
    diff_words: collections.Counter[str] = collections.Counter()
    diff_bytes_hist: collections.Counter[str] = collections.Counter()
    sample = shims[:4]
    for pid in sample:
        mine = private(pid)
        other = shims[(shims.index(pid) + 1) % len(shims)]
        other_priv = private(other)
        for va, kind in mine.items():
            pool = _pool_header(pid, va) if kind in ("anon", "[heap]") else None
            cls = f"obmalloc:{pool[0]}" if pool else kind
            by_class_all[("obmalloc" if pool else kind)] += 4
            if pool:
                by_class_all[cls] += 4
            origin[f"{kind}:{'cow' if va in tmpl else 'new-since-template'}"] += 4
            if va in other_priv and kind in ("anon", "[heap]", "libpython:data", "[stack]"):
                try:
                    a = read_mem(pid, va, PAGE)
                    b = read_mem(other, va, PAGE)
                except OSError:
                    continue
                n = sum(1 for x, y in zip(a, b, strict=False) if x != y)
                diffs[kind + (":obmalloc" if pool else "")] += 1
                bucket = (
                    "0"
                    if n == 0
                    else "<=16"
                    if n <= 16
                    else "<=64"
                    if n <= 64
                    else "<=512"
                    if n <= 512
                    else ">512"
                )
                diff_bytes_hist[f"{kind}{':obmalloc' if pool else ''}:{bucket}"] += 1
                if pool:
                    size = pool[0]
                    pool_base = va & ~(POOL - 1)
                    for w in range(0, PAGE, 8):
                        if a[w : w + 8] != b[w : w + 8]:
                            off = va + w - pool_base
                            if off < POOL_OVERHEAD:
                                diff_words["pool-header"] += 1
                                continue
                            at = (off - POOL_OVERHEAD) % size
                            # refcount: at 0 (untracked object) or 16 (after a GC header)
                            diff_words[
                                "block+0"
                                if at == 0
                                else "block+16"
                                if at == 16
                                else "block+8"
                                if at == 8
                                else "block+24"
                                if at == 24
                                else "block-other"
                            ] += 1
    n = len(sample)
    out["private_kib_per_shim_by_class"] = {k: round(v / n) for k, v in by_class_all.most_common()}
    out["private_kib_per_shim_by_origin"] = {k: round(v / n) for k, v in origin.most_common()}
    out["same_page_in_next_shim_private"] = dict(diffs)
    out["differing_bytes_per_page"] = dict(sorted(diff_bytes_hist.items()))
    out["differing_words_in_obmalloc_pages"] = dict(diff_words.most_common())
    if template:
        first = private(shims[0])
        out["dirty_blocks_vs_template"] = dirty_blocks(
            shims[0], template, [va for va, k in first.items() if k in ("anon", "[heap]") and va in tmpl]
        )
    return out


def print_report(report: dict[str, Any]) -> None:
    cols = ("rss", "pss", "private", "ksm", "ours", "helpers", "other", "zero")
    for g, table in report.items():
        if g.startswith("_"):
            continue
        print(f"\n== {g} (KiB per process)")
        print(f"{'mapping':24}" + "".join(f"{c:>9}" for c in cols))
        tot: collections.Counter[str] = collections.Counter()
        for kind, row in sorted(table.items(), key=lambda kv: -kv[1].get("pss", 0)):
            tot.update(row)
            if row.get("rss", 0) >= 8:
                print(f"{kind[:24]:24}" + "".join(f"{row.get(c, 0):9.0f}" for c in cols))
        print(f"{'TOTAL':24}" + "".join(f"{tot.get(c, 0):9.0f}" for c in cols))
    print("\nthreads per process:", sorted(collections.Counter(report["_threads"].values()).items()))
    for k in ("_per_pod", "_ksm_pages", "_private_anon"):
        if k in report:
            print(f"\n{k}: {json.dumps(report[k], indent=1)}")


# -- the pods ------------------------------------------------------------------------------------


async def run(pods: int, settle: float, env: dict[str, str], hold: float) -> dict[str, Any]:
    from arun.benchmarks import shim_bench as sb
    from arun.core.runtime import RUNTIME_ARUN
    from arun.runtime import ksm

    os.environ.update(env)
    ksm.switch_on()
    async with (
        sb.pod_bench_env() as (senv, base, rootfs),
        sb.running_pods(senv, base, rootfs, RUNTIME_ARUN, pods, prefix="shimdirty") as running,
    ):
        pids = sorted(set(running.pids))
        assert running.shims.zygote is not None
        zpid = running.shims.zygote.pid
        helpers = sb._spares_of(zpid, senv.ttrpc_address)
        template = [h for h in helpers if _ppid(h) == zpid]
        spares = [h for h in helpers if h not in template]
        allp = pids + helpers + [zpid]

        def measure() -> dict[str, Any]:
            t = sum(sb.pss_kib(p) for p in allp)
            return {"pss_per_pod_kib": round(t / pods)}

        _result, secs = await sb._settle(measure, True, settle)
        await asyncio.sleep(hold)
        groups = {"shim": pids, "zygote": [zpid], "spare": spares}
        if template:  # before zyg2: a child of the zygote forked the spares
            groups["template"] = template
        report = account(groups)
        report["_summary"] = {
            "settled_after_s": round(secs, 1),
            "pss_per_pod_kib": measure()["pss_per_pod_kib"],
            "pss": {g: [sb.pss_kib(p) for p in ps] for g, ps in groups.items()},
            "env": env,
        }
        return report


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--settle", type=float, default=150.0)
    ap.add_argument("--hold", type=float, default=0.0, help="extra seconds after settling")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("env", nargs="*", help="NAME=VALUE for the zygote and shims")
    args = ap.parse_args(argv)
    env = dict(e.split("=", 1) for e in args.env)
    report = asyncio.run(run(args.pods, args.settle, env, args.hold))
    print_report(report)
    print("\n_summary:", json.dumps(report["_summary"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
