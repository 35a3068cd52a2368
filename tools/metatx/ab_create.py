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
        socks = {}
        for name, src in (("A", src_a), ("B", src_b)):
            (base / name).mkdir()
            sb._env = lambda src=src: {**os.environ, "PYTHONPATH": src}  # type: ignore[misc]
            socks[name] = stack.enter_context(sb.private_arun(base / name))
        if with_containerd:
            (base / "C").mkdir()
            socks["containerd"] = stack.enter_context(sb.private_containerd(base / "C"))
        series = {
            k: sb._Series(v, archive, sb.RUNTIME_RUNC if k == "containerd" else sb.RUNTIME_ARUN)
            for k, v in socks.items()
        }
        for s in series.values():
            stack.callback(s.cleanup)
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
