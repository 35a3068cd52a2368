"""``python -m arun.testing.daemon_main --import MOD ... -- daemon ARGS``: the arun command after
importing extra modules (test plugins that register on the default registry)."""

from __future__ import annotations

import argparse
import importlib
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="arun.testing.daemon_main")
    p.add_argument("--import", dest="imports", action="append", default=[])
    args = p.parse_args(argv)
    import arun.builtins  # noqa: F401  (the real plugins first, as the daemon loads them)

    for name in args.imports:
        importlib.import_module(name)
    from arun.cmd.main import main as arun_main

    return arun_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
