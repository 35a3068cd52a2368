"""``ctr run -d`` split into its RPCs as ctr sees them (ctr under strace), for several arun
source trees and containerd 1.6, interleaved (one run on each per round); prints, per RPC in
ctr's order, the p50 duration (request to end of stream) in ms of every tree and containerd.

    git -C /work/main archive main src | tar -x -C /tmp/rp-base
    PYTHONPATH=src python tools/readpath/per_rpc_ab.py 12 /tmp/rp-base/src src

Uses tools/taskpath/ab_rpcs.py for the tracing. Needs root, runc, containerd, ctr and strace.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "taskpath"))

import ab_rpcs as ab

from arun.benchmarks import shim_bench as sb
from arun.testing.ociarchive import Entry, build_archive
from arun.testing.ociarchive import busybox_rootfs as layer


def main() -> None:
    runs = int(sys.argv[1])
    trees = {chr(ord("A") + i): os.path.abspath(s) for i, s in enumerate(sys.argv[2:])}
    with sb.workdir() as base, contextlib.ExitStack() as stack:
        archive = base / "image.tar"
        build_archive(archive, sb.IMAGE, [[*layer(), Entry("bin/sleep", "symlink", b"busybox")]])
        series = sb.series_of_trees(base, stack, archive, trees, containerd=True)
        res: dict[str, list[dict]] = {k: [] for k in series}  # type: ignore[type-arg]
        for i in range(runs + 1):  # round 0 warms up
            for name, s in series.items():
                id_ = f"t{i:02d}"
                s.ids.append(id_)
                trace = base / f"{name}-{id_}.trace"
                ab.traced_run(s.sock, s.ns, s.runtime, id_, trace)
                if i:
                    res[name].append(ab.parse_trace(trace))
        names = list(res)
        n = min(len(d["rpcs"]) for rows in res.values() for d in rows)
        print("rpc".ljust(32) + "".join(k.rjust(12) for k in names))
        total = {
            k: statistics.median((d["exit"] - d["exec"]) * 1000 for d in rows) for k, rows in res.items()
        }
        print("total (ctr life)".ljust(32) + "".join(f"{total[k]:12.2f}" for k in names))
        for j in range(n):
            path = res[names[0]][0]["rpcs"][j][0]
            label = path.split("/")[-2].split(".")[-1] + "/" + path.split("/")[-1]
            row = []
            for k in names:
                row.append(statistics.median((d["rpcs"][j][2] - d["rpcs"][j][1]) * 1000 for d in res[k]))
            print(f"{j:2d} {label:29s}" + "".join(f"{v:12.2f}" for v in row))


if __name__ == "__main__":
    main()
