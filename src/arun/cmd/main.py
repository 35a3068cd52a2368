"""The ``arun`` command line.

- ``arun daemon``, ``arun config default|dump``, ``arun --version``: the daemon side;
- ``arun images|run|ps|exec|logs|kill|rm|events|version|namespaces|pods|containers|bench``:
  the client side (``arun.cmd.ctl``), against any daemon speaking containerd's API and CRI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from arun.plugin import config as configmod
from arun.version import PACKAGE, VERSION, revision


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="arun",
        description="A container runtime daemon, wire-compatible with containerd (CRI v1 and its API).",
    )
    p.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    from arun.cmd.ctl import add_parsers as add_client_parsers
    from arun.cmd.ctl.common import add_global_flags

    add_global_flags(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("daemon", help="run the daemon")
    d.add_argument(
        "-c",
        "--config",
        help=f"config file (default {configmod.DEFAULT_CONFIG}; when that is missing: the embedded defaults)",
    )
    d.add_argument("--root", help=f"persistent state directory (default {configmod.DEFAULT_ROOT})")
    d.add_argument("--state", help=f"runtime state directory (default {configmod.DEFAULT_STATE})")
    d.add_argument("-a", "--address", help=f"gRPC socket path (default {configmod.DEFAULT_ADDRESS})")
    d.add_argument(
        "-l", "--log-level", help="trace, debug, info, warn, error, fatal or panic (default: [debug] level)"
    )

    c = sub.add_parser("config", help="print configuration")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    csub.add_parser("default", help="print the default config, with every plugin's section")
    dump = csub.add_parser("dump", help="print the config a daemon would run with")
    dump.add_argument("-c", "--config", help=f"config file (default {configmod.DEFAULT_CONFIG})")

    add_client_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        rev = revision()
        print(f"arun {PACKAGE} {VERSION}" + (f" {rev}" if rev else ""))
        return 0
    if args.command == "daemon":
        from arun.cmd import daemon

        return daemon.main(args)
    if args.command == "config":
        from arun.cmd import config_cmd

        return config_cmd.main(args)
    from arun.cmd.ctl import COMMANDS
    from arun.cmd.ctl import main as client_main

    if args.command in COMMANDS:
        return client_main(args)
    parser.print_help(sys.stderr)
    return 2
