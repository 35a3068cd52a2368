"""Paired A/B(/C…) of ``ctr run -d`` split into its RPCs (``tools/taskpath/ab_rpcs.py``'s tracing),
for a loaded machine: every round runs one ``ctr run -d`` per tree, the order reversed every
other round, and besides each tree's medians prints the median of the per-round differences
against the first tree (a round's trees ran within a second of each other, so a load swing
hits both). Optionally containerd 1.6 (Go shim) as one more series (``--containerd``).

    git archive <base-commit> src | tar -x -C /tmp/base
    PYTHONPATH=src python tools/taskfast/paired.py /tmp/base/src src 40 [--containerd]

Needs root, runc, ctr and strace (and containerd with ``--containerd``). Not a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
from pathlib import Path

from arun.benchmarks import shim_bench as sb
from arun.testing.ociarchive import Entry, build_archive
from arun.testing.ociarchive import busybox_rootfs as layer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "taskpath"))
import ab_rpcs

KEYS = ("create", "start", "pre", "task", "total")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    containerd = "--containerd" in sys.argv
    runs = int(args[-1])
    trees = {chr(ord("A") + i): os.path.abspath(p) for i, p in enumerate(args[:-1])}
    with sb.workdir() as base, contextlib.ExitStack() as stack:
        archive = base / "image.tar"
        build_archive(archive, sb.IMAGE, [[*layer(), Entry("bin/sleep", "symlink", b"busybox")]])
        series = sb.series_of_trees(base, stack, archive, trees, containerd=containerd)
        rounds: list[dict[str, dict[str, float]]] = []
        for i in range(runs + 1):  # round 0 warms up
            order = list(series.items())
            if i % 2:
                order.reverse()
            row = {}
            for name, s in order:
                id = f"t{i:02d}"
                s.ids.append(id)
                row[name] = ab_rpcs.traced_run(s.sock, s.ns, s.runtime, id, base / f"{name}-{id}.trace")
            if i:
                rounds.append(row)
        first = next(iter(trees))
        out: dict[str, object] = {}
        for name in series:
            med = {k: round(statistics.median(r[name][k] for r in rounds), 1) for k in KEYS}
            if name != first:
                for k in KEYS:
                    diff = statistics.median(r[name][k] - r[first][k] for r in rounds)
                    med[f"{k}_minus_{first}"] = round(diff, 1)
            out[name] = med
        print(json.dumps(out))


if __name__ == "__main__":
    main()
