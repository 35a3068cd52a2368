"""Interleaved A/B of the handler time per RPC of ``ctr containers create`` + ``ctr containers rm``:
one private arun daemon per source tree at ``-l debug``; after N rounds (create and rm on each
daemon in turn) prints, per method, the p50 of ``duration_ms`` from each daemon's "request done"
log lines (the handler, reply included, as the middleware times it).

    git -C /work/main archive main src | tar -x -C /tmp/rp-base
    PYTHONPATH=src python tools/readpath/ab_durations.py /tmp/rp-base/src src --rounds 40
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "grpcfast"))

import ab_create

from arun.benchmarks import shim_bench as sb

_DONE = re.compile(r'msg="request done".*duration_ms=([\d.]+).*namespace=(\S+).*method=(\S+)')


def durations(log: Path, ns: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        m = _DONE.search(line)
        if m and m.group(2) == ns:
            method = m.group(3).rsplit(".", 1)[-1]
            out.setdefault(method, []).append(float(m.group(1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("srcs", nargs="+")
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    with sb.workdir() as base, ab_create.daemons_with_image(base, args.srcs, "debug", "rd") as (socks, ns):
        names = list(socks)
        for i in range(args.rounds):
            for s in socks.values():
                sb._ctr(s, ns, "containers", "create", sb.IMAGE, f"c{i}", "sleep", "1")
                sb._ctr(s, ns, "containers", "rm", f"c{i}")
        found = {k: durations(base / k / "arun.log", ns) for k in names}
        methods = [m for m in found[names[0]] if all(len(found[k].get(m, [])) >= args.rounds for k in names)]
        print("p50 duration_ms".ljust(28) + "".join(k.rjust(10) for k in names) + "   calls/tree")
        for m in methods:
            row = "".join(f"{statistics.median(found[k][m]):10.3f}" for k in names)
            print(f"{m:28s}{row}   {len(found[names[0]][m])}")


if __name__ == "__main__":
    main()
