"""h2's per-frame trace text, computed only if something prints it.

h2's ``H2Connection._receive_frame`` starts with
``self.config.logger.trace("Received frame: %s", repr(frame))``: the ``repr`` is an argument, so
it is computed for every received frame whatever the logger does with it. grpclib gives h2 no
logger (h2's ``DummyLogger`` drops everything), and a frame's repr is not cheap (HEADERS ~9 µs,
DATA ~8 µs on the 2-core dev box; ~21 µs per unary call of a grpc-go client, which sends HEADERS,
DATA, PING and WINDOW_UPDATE per call: ~3-5 % of the daemon's CPU for a bare call).

``install()`` gives the ``h2.connection`` module a global ``repr`` — it shadows the builtin
there, and ``_receive_frame`` is the only code in that module that calls ``repr`` — returning a
``LazyRepr``: its ``str()`` and ``repr()`` are the frame's repr, computed when a logger formats
the record, so a logger that does print it prints the same text. h2's files are untouched.

This leans on how h2 4.4.1 is written, so h2 is pinned in pyproject.toml and ``install()``
checks the version and that ``_receive_frame`` is still the only user of a global ``repr`` in
``h2.connection``; with anything else it logs a warning and leaves h2 alone (slower, not wrong).
A test fails when the pin and the installed h2 differ. A server installs it at its start only when
it runs on h2's connection (``ARUN_GRPC_H2=h2``); by default grpclib's server runs on
``arun.server.http2`` and h2 is left alone.
"""

from __future__ import annotations

import builtins
import logging
import types
from collections.abc import Iterator

import h2
import h2.connection

H2_VERSION = "4.4.1"

log = logging.getLogger(__name__)


class LazyRepr:
    """``repr(obj)``, computed when asked for as text."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return builtins.repr(self.obj)

    __repr__ = __str__


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def repr_users() -> set[str]:
    """Qualified names of the functions in ``h2.connection`` that look up a global ``repr``."""
    users: set[str] = set()
    for value in vars(h2.connection).values():
        candidates = vars(value).values() if isinstance(value, type) else [value]
        for candidate in candidates:
            fn = getattr(candidate, "__func__", None) or getattr(candidate, "fget", None) or candidate
            code = getattr(fn, "__code__", None)
            if (
                not isinstance(code, types.CodeType)
                or getattr(fn, "__module__", None) != h2.connection.__name__
            ):
                continue
            if any("repr" in c.co_names for c in _codes(code)):
                users.add(fn.__qualname__)
    return users


def install() -> bool:
    """Make h2's per-frame trace argument lazy; False (and a warning) if h2 is not the expected one.

    An unexpected h2 costs speed, not correctness: the daemon runs with h2 as it is.
    """
    if h2.connection.__dict__.get("repr") is LazyRepr:
        return True
    users = repr_users()
    if h2.__version__ != H2_VERSION or users != {"H2Connection._receive_frame"}:
        log.warning(
            "h2 is not the one arun.server.h2trace was written for; its per-frame trace repr stays eager",
            extra={"h2_version": h2.__version__, "expected": H2_VERSION, "repr_users": sorted(users)},
        )
        return False
    h2.connection.repr = LazyRepr  # type: ignore[attr-defined]
    return True


__all__ = ["H2_VERSION", "LazyRepr", "install", "repr_users"]
