"""Run every benchmark module of this package (``make bench``)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import arun.benchmarks as package


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.endswith("_bench"))
    wanted = [n for n in names if not argv or any(a in n for a in argv)]
    status = 0
    for name in wanted:
        module = importlib.import_module(f"{package.__name__}.{name}")
        print(f"== {name}", flush=True)
        status |= int(module.main([]) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
