"""The lease of the current request, carried in a contextvar.

Set per request from the ``containerd-lease`` gRPC header. Store writes made
while a lease is current attach the new resources to it, so garbage
collection leaves them alone until the lease is deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

GRPC_HEADER = "containerd-lease"

_current: ContextVar[str | None] = ContextVar("lease", default=None)


def current() -> str | None:
    """The lease id of this context, or None."""
    return _current.get() or None


@contextlib.contextmanager
def use(lease: str | None) -> Iterator[str | None]:
    """Run the block with ``lease`` as the current lease (None: no lease)."""
    token = _current.set(lease)
    try:
        yield lease
    finally:
        _current.reset(token)


def set_current(lease: str | None) -> None:
    """Set the lease for the rest of this task (request middlewares)."""
    _current.set(lease or None)
