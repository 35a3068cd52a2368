"""Interleaved A/B/C: ``ctr run -d`` and ``ctr containers create`` against an arun daemon running
tree A, one running tree B (arun's shim on both) and a private containerd 1.6 (Go shim), one after
the other in every round; prints the medians as JSON.

    git archive <base-commit> src | tar -x -C /tmp/base
    PYTHONPATH=src python tools/shimperf/ab_run.py /tmp/base/src src 20
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys

from arun.benchmarks import shim_bench as sb
from arun.testing.ociarchive import Entry, build_archive
from arun.testing.ociarchive import busybox_rootfs as layer


def main() -> None:
    src_a, src_b, runs = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), int(sys.argv[3])
    with sb.workdir() as base, contextlib.ExitStack() as stack:
        archive = base / "image.tar"
        build_archive(archive, sb.IMAGE, [[*layer(), Entry("bin/sleep", "symlink", b"busybox")]])
        series = sb.series_of_trees(base, stack, archive, {"A": src_a, "B": src_b}, containerd=True)
        for s in series.values():  # warm up
            s.run_one(record=False)
            s.create_one()
            s.create_times.clear()
        for _ in range(runs):
            for s in series.values():
                s.run_one()
                s.create_one()
        out = {
            k: {
                "run_p50_ms": round(statistics.median(s.times), 1),
                "create_p50_ms": round(statistics.median(s.create_times), 1),
            }
            for k, s in series.items()
        }
        print(json.dumps(out))


if __name__ == "__main__":
    main()
