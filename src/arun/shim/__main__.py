"""``containerd-shim-arun-v1``: the runtime v2 shim binary of arun.

* ``… start``: find or launch the pod's shim, print its address (``arun.shim.manager``);
* ``… delete``: clean up after a dead shim, print a DeleteResponse;
* ``-v``/``-version``, ``-info``;
* no action: be the long-running server on the socket inherited as fd 3 (``arun.shim.server``).

Imports are deferred to the branch that needs them: ``start`` must not pay for asyncio or the
protobuf runtime.
"""

from __future__ import annotations

import os
import sys


def _stdin() -> bytes:
    from arun.shim.manager import MAX_STDIN

    try:
        if os.isatty(0):
            return b""
        return sys.stdin.buffer.read(MAX_STDIN)
    except (OSError, ValueError, AttributeError):
        return b""


def main(argv: list[str] | None = None) -> int:
    from arun.shim import manager

    args = sys.argv[1:] if argv is None else argv
    try:
        flags = manager.parse_flags(args)
        if flags.version:
            sys.stdout.write(manager.version_text())
            return 0
        if flags.info:
            sys.stdout.buffer.write(manager.info(_stdin()))
            return 0
        if flags.action == "start":
            out = manager.start(flags, _stdin(), dict(os.environ), os.getcwd())
            sys.stdout.buffer.write(out)
            sys.stdout.flush()
            return 0
        if flags.action == "delete":
            sys.stdout.buffer.write(manager.delete(flags, dict(os.environ), os.getcwd()))
            sys.stdout.flush()
            return 0
        if flags.action:
            raise manager.UsageError(f"unknown action {flags.action!r}")
        if not flags.namespace:
            raise manager.UsageError("shim namespace cannot be empty")
    except manager.UsageError as exc:
        sys.stderr.write(f"containerd-shim-arun-v1: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"containerd-shim-arun-v1: {exc}\n")
        return 1
    from arun.shim.server import main_serve, trim_imports

    trim_imports()
    return main_serve(flags.namespace, flags.id, flags.debug, flags.socket)


if __name__ == "__main__":
    sys.exit(main())
