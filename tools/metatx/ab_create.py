"""Interleaved A/B (and containerd 1.6): ``ctr containers create`` against an arun daemon running
tree A and one running tree B, one after the other in every round; prints the medians as JSON.

    git archive <base-commit> src | tar -x -C /tmp/base
    PYTHONPATH=src python tools/metatx/ab_create.py /tmp/base/src src 60 [--containerd]
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
    with_containerd = "--containerd" in sys.argv[4:]
    with sb.workdir() as base, contextlib.ExitStack() as stack:
        archive = base / "image.tar"
        build_archive(archive, sb.IMAGE, [[*layer(), Entry("bin/sleep", "symlink", b"busybox")]])
        trees = {"A": src_a, "B": src_b}
        series = sb.series_of_trees(base, stack, archive, trees, containerd=with_containerd)
        for s in series.values():  # warm up
            for _ in range(3):
                s.create_one()
            s.create_times.clear()
        for _ in range(runs):
            for s in series.values():
                s.create_one()
        out = {
            k: {
                "create_p50_ms": round(statistics.median(s.create_times), 1),
                "create_min_ms": round(min(s.create_times), 1),
            }
            for k, s in series.items()
        }
        print(json.dumps(out))


if __name__ == "__main__":
    main()
