"""Typed errors, one class per gRPC status code.

Every layer raises these; ``errdefs.grpc`` is the one place that turns them
into status codes and back, so an error class survives a process boundary
(daemon ⇄ shim over ttrpc, client ⇄ daemon over gRPC).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "ArunError",
    "CanceledError",
    "ConflictError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "NotModifiedError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "origin",
    "resolve",
]


class ArunError(Exception):
    """Base of every arun error; ``code`` is the canonical gRPC status number."""

    code: ClassVar[int] = 2

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class CanceledError(ArunError):
    code = 1


class UnknownError(ArunError):
    code = 2


class InvalidArgumentError(ArunError):
    code = 3


class DeadlineExceededError(ArunError):
    code = 4


class NotFoundError(ArunError):
    code = 5


class AlreadyExistsError(ArunError):
    code = 6


class PermissionDeniedError(ArunError):
    code = 7


class ResourceExhaustedError(ArunError):
    code = 8


class FailedPreconditionError(ArunError):
    code = 9


class ConflictError(FailedPreconditionError):
    """A concurrent change won; containerd reports it as FAILED_PRECONDITION."""


class NotModifiedError(FailedPreconditionError):
    """Nothing to do; containerd reports it as FAILED_PRECONDITION."""


class AbortedError(ArunError):
    code = 10


class OutOfRangeError(ArunError):
    code = 11


class UnimplementedError(ArunError):
    code = 12


class InternalError(ArunError):
    code = 13


class UnavailableError(ArunError):
    code = 14


class DataLossError(ArunError):
    code = 15


class UnauthenticatedError(ArunError):
    code = 16


_BUILTINS: tuple[tuple[type[BaseException], type[ArunError]], ...] = (
    (FileNotFoundError, NotFoundError),
    (FileExistsError, AlreadyExistsError),
    (PermissionError, PermissionDeniedError),
    (NotImplementedError, UnimplementedError),
    (TimeoutError, DeadlineExceededError),
)


def resolve(exc: BaseException) -> type[ArunError] | None:
    """The errdefs class that best describes ``exc``, or None.

    Walks ``__cause__`` and ExceptionGroup members the way Go's
    ``errdefs.Resolve`` unwraps, and maps the few builtins STYLE.md names.
    """
    found = origin(exc)
    if found is None:
        return None
    if isinstance(found, ArunError):
        return type(found)
    for builtin, cls in _BUILTINS:
        if isinstance(found, builtin):
            return cls
    return None


def origin(exc: BaseException) -> BaseException | None:
    """The exception (``exc`` itself, a cause or a group member) that ``resolve`` classifies ``exc`` by."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ArunError) or isinstance(e, tuple(b for b, _ in _BUILTINS)):
            return e
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        if e.__cause__ is not None:
            stack.append(e.__cause__)
    return None
