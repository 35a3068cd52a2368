"""What the client commands share: global flags, the client, errors as one line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from arun import errdefs, namespaces
from arun.cmd.ctl.output import FORMATS
from arun.plugin.config import DEFAULT_ADDRESS

if TYPE_CHECKING:
    # The client (and protobuf) load when a command runs, not to build the parser.
    from arun.client import Client

__all__ = ["add_global_flags", "client_from", "record", "run_command"]

T = TypeVar("T")
ENV_ADDRESS = "ARUN_ADDRESS"


def default_address() -> str:
    return os.environ.get(ENV_ADDRESS) or os.environ.get("CONTAINERD_ADDRESS") or DEFAULT_ADDRESS


def add_global_flags(p: argparse.ArgumentParser, *, top: bool, short_address: bool = True) -> None:
    """``--address``, ``--namespace``, ``--output``, ``--timeout``.

    On the top-level parser they carry the defaults; repeated on each command
    (``default=SUPPRESS``) they may also follow the command name, as with ctr.
    """

    def d(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    # Commands that use -a for --all (kill, containers: as crictl does) take only the long form.
    p.add_argument(
        *(("-a", "--address") if top or short_address else ("--address",)),
        default=d(default_address()),
        help=(
            "daemon socket: a path, unix:///path or tcp://host:port "
            f"(default ${ENV_ADDRESS} or {DEFAULT_ADDRESS})"
        ),
    )
    p.add_argument(
        "-n",
        "--namespace",
        default=d(os.environ.get(namespaces.ENV) or namespaces.DEFAULT),
        help=f"namespace (default ${namespaces.ENV} or {namespaces.DEFAULT!r})",
    )
    p.add_argument(
        "-o", "--output", choices=FORMATS, default=d("table"), help="output format (default table)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=d(60.0),
        help="seconds per request (default 60; waits are not limited)",
    )


def client_from(args: argparse.Namespace, namespace: str | None = None) -> Client:
    from arun.client import Client

    return Client(args.address, namespace=namespace or args.namespace, timeout=args.timeout or None)


def record(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain dict (nested dataclasses too)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return dict(obj)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def run_command(fn: Callable[[], Awaitable[int]]) -> int:
    """Run an async command: errors become one line on stderr and exit status 1; Ctrl-C is 130."""
    try:
        return asyncio.run(_guard(fn))
    except KeyboardInterrupt:
        return 130
    except errdefs.ArunError as e:
        # The class names the gRPC code (NotFoundError, UnauthenticatedError, ...) for scripts.
        print(f"arun: {one_line(e)} ({type(e).__name__})", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"arun: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return 1


async def _guard(fn: Callable[[], Awaitable[int]]) -> int:
    return await fn()
