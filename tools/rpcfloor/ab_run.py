"""``ctr run -d`` to running, interleaved across source trees and containerd in one run (the order
of the series reversed every other round); prints medians and the ratio to containerd as JSON.

    PYTHONPATH=src python tools/rpcfloor/ab_run.py RUNS main=/tmp/base/src branch=src [NAME=SRC ...]

``shim_bench --only run`` runs one tree at a time, so two trees are compared across runs made at
different loads; this puts them in the same run.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys

from arun.benchmarks import shim_bench as sb
from arun.testing.ociarchive import Entry, build_archive
from arun.testing.ociarchive import busybox_rootfs as layer


def main() -> None:
    runs = int(sys.argv[1])
    trees = dict(arg.split("=", 1) for arg in sys.argv[2:])
    with sb.workdir() as base, contextlib.ExitStack() as stack:
        archive = base / "image.tar"
        build_archive(archive, sb.IMAGE, [[*layer(), Entry("bin/sleep", "symlink", b"busybox")]])
        series = sb.series_of_trees(base, stack, archive, trees, containerd=True)
        for s in series.values():
            s.run_one(record=False)  # warm up
        for i in range(runs):
            items = list(series.values())
            for s in reversed(items) if i % 2 else items:
                s.run_one()
                s.create_one()
        ref = statistics.median(series["containerd"].times)
        out = {
            name: {
                "run_p50_ms": round(statistics.median(s.times), 1),
                "create_p50_ms": round(statistics.median(s.create_times), 1),
                "vs_containerd": round(statistics.median(s.times) / ref, 3),
            }
            for name, s in series.items()
        }
        print(json.dumps(out))


if __name__ == "__main__":
    main()
