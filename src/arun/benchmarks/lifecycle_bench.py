"""Pod lifecycle through CRI: a private arun and a private containerd 1.6, side by side.

Runs ``arun bench --start arun --start containerd --scenario lifecycle,exec``
(see ``arun.bench``): 20 pods through the seven lifecycle steps one step at a
time, one pod's timeline, and ExecSync. Arguments are passed on to ``arun
bench`` (``-- --pods 50 --concurrency 4``), which also takes ``--json`` and
``--chart``.
"""

from __future__ import annotations

import argparse

REQUIRES = ("root", "runc", "containerd", "busybox")
SUMMARY = "CRI pod lifecycle and ExecSync, private arun vs private containerd 1.6 (arun bench)"


def main(argv: list[str]) -> int:
    from arun.bench.cli import add_arguments
    from arun.bench.cli import main as bench_main

    p = argparse.ArgumentParser(prog="lifecycle_bench", description=__doc__)
    add_arguments(p)
    args = p.parse_args(
        ["--start", "arun", "--start", "containerd", "--scenario", "lifecycle,exec", "--pods", "20", *argv]
    )
    return bench_main(args)
