"""The request deadline, as a loop-clock instant in a contextvar.

Servers set it from the incoming request (gRPC ``grpc-timeout`` or ttrpc
``timeout_nano``); clients turn what remains into the outgoing timeout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


def current() -> float | None:
    """The deadline on the ``time.monotonic`` clock, or None."""
    return _deadline.get()


def remaining() -> float | None:
    """Seconds left before the deadline (may be negative), or None."""
    d = _deadline.get()
    return None if d is None else d - time.monotonic()


def set_for_task(timeout: float | None) -> float | None:
    """Set the deadline ``timeout`` seconds from now (never later than an outer one) until the task ends.

    For request middlewares, which run in the request's own task: a contextvar set there
    goes away with the task. ``use()`` is the same as a block, at several times the cost
    (a generator-based context manager).
    """
    new = None if timeout is None else time.monotonic() + timeout
    outer = _deadline.get()
    if outer is not None and (new is None or outer < new):
        new = outer
    _deadline.set(new)
    return new


@contextlib.contextmanager
def use(timeout: float | None) -> Iterator[float | None]:
    """Run the block with a deadline ``timeout`` seconds from now (never later than an outer one)."""
    new = None if timeout is None else time.monotonic() + timeout
    outer = _deadline.get()
    if outer is not None and (new is None or outer < new):
        new = outer
    token = _deadline.set(new)
    try:
        yield new
    finally:
        _deadline.reset(token)
