"""Status codes, and the hooks that turn exceptions into statuses and back.

The ttrpc package never imports arun's errdefs. A :class:`~arun.ttrpc.server.Server`
takes ``to_status(exc) -> (code, message)`` and a :class:`~arun.ttrpc.client.Client`
takes ``from_status(code, message) -> exception``; arun plugs in
``arun.errdefs.grpc.code_of``/``message_of``/``from_code`` from the outside so that an
errdefs class raised in a handler comes out of the client as the same class.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from arun.ttrpc.errors import ProtocolError, StatusError

__all__ = [
    "Code",
    "FromStatus",
    "ToStatus",
    "default_from_status",
    "default_to_status",
]


class Code(enum.IntEnum):
    """The canonical gRPC status codes, which ttrpc reuses unchanged."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


ToStatus = Callable[[BaseException], tuple[int, str]]
"""Server hook: the (code, message) a handler's exception is reported with."""

FromStatus = Callable[[int, str], BaseException]
"""Client hook: the exception a non-OK (code, message) is raised as."""

# Builtins with an obvious code, in the spirit of grpc-go's guess (Go ttrpc convertCode).
_BUILTIN_CODES: tuple[tuple[type[BaseException], Code], ...] = (
    (TimeoutError, Code.DEADLINE_EXCEEDED),
    (FileNotFoundError, Code.NOT_FOUND),
    (FileExistsError, Code.ALREADY_EXISTS),
    (PermissionError, Code.PERMISSION_DENIED),
    (NotImplementedError, Code.UNIMPLEMENTED),
    (EOFError, Code.OUT_OF_RANGE),
)


def default_to_status(exc: BaseException) -> tuple[int, str]:
    """StatusError and ProtocolError keep their code; a few builtins map; the rest is UNKNOWN."""
    if isinstance(exc, StatusError):
        return exc.code, exc.message
    if isinstance(exc, ProtocolError):
        return exc.code, exc.message
    for cls, code in _BUILTIN_CODES:
        if isinstance(exc, cls):
            return int(code), str(exc)
    return int(Code.UNKNOWN), str(exc)


def default_from_status(code: int, message: str) -> BaseException:
    """Every non-OK status becomes a :class:`StatusError` carrying the code."""
    return StatusError(code, message)
