"""The request namespace, carried in a contextvar.

Set per request from the ``containerd-namespace`` gRPC header (or
``containerd-namespace-ttrpc`` for ttrpc); every store call starts with
``required()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from arun import identifiers
from arun.errdefs import FailedPreconditionError

GRPC_HEADER = "containerd-namespace"
TTRPC_HEADER = "containerd-namespace-ttrpc"
ENV = "CONTAINERD_NAMESPACE"
DEFAULT = "default"

_current: ContextVar[str] = ContextVar("namespace")


def current() -> str | None:
    """The namespace of this context, or None."""
    return _current.get(None) or None


def required() -> str:
    """The namespace of this context; FailedPrecondition if none, InvalidArgument if malformed."""
    ns = _current.get(None)
    if not ns:
        raise FailedPreconditionError("namespace is required")
    identifiers.validate(ns)
    return ns


@contextlib.contextmanager
def use(namespace: str) -> Iterator[str]:
    """Run the block with ``namespace`` as the current namespace."""
    token = _current.set(namespace)
    try:
        yield namespace
    finally:
        _current.reset(token)


def set_current(namespace: str | None) -> None:
    """Set the namespace for the rest of this task (request middlewares)."""
    _current.set(namespace or "")
