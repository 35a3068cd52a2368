"""The client side of the ``arun`` command: images, containers and tasks (containerd's API),
pods and containers (CRI), events, and the benchmark harness.

``add_parsers(sub)`` adds the commands to the ``arun`` parser; ``main(args)``
runs the one chosen. Each command prints records as a table, JSON or YAML
(``--output``), reports an error as one line on stderr with exit status 1,
and takes ``--address``/``--namespace`` before or after its name, as ctr does.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["COMMANDS", "add_parsers", "main"]

COMMANDS = {
    "images": "images", "image": "images", "i": "images",
    "run": "containers", "ps": "containers", "exec": "containers", "logs": "containers",
    "kill": "containers", "rm": "containers",
    "events": "misc", "version": "misc", "namespaces": "misc", "ns": "misc",
    "pods": "cri", "containers": "cri",
    "bench": "bench",
}  # fmt: skip


def add_parsers(sub: Any) -> None:
    from arun.bench.cli import add_arguments as bench_arguments
    from arun.cmd.ctl import containers, cri, images, misc

    images.add_parser(sub)
    containers.add_parsers(sub)
    misc.add_parsers(sub)
    cri.add_parsers(sub)
    b = sub.add_parser("bench", help="benchmark CRI endpoints side by side (arun.bench)")
    bench_arguments(b)


def main(args: argparse.Namespace) -> int:
    module = COMMANDS[args.command]
    if module == "images":
        from arun.cmd.ctl import images

        return images.main(args)
    if module == "containers":
        from arun.cmd.ctl import containers

        return containers.main(args)
    if module == "misc":
        from arun.cmd.ctl import misc

        return misc.main(args)
    if module == "cri":
        from arun.cmd.ctl import cri

        return cri.main(args)
    from arun.bench.cli import main as bench_main

    return bench_main(args)
