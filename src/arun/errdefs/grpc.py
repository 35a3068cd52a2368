"""The one mapping between errdefs classes and gRPC status codes.

Used by the gRPC middleware, the ttrpc server and, reversed, by clients
(like containerd's ``errgrpc.ToNative``).
"""

from __future__ import annotations

from arun import errdefs

_BY_CODE: dict[int, type[errdefs.ArunError]] = {
    1: errdefs.CanceledError,
    2: errdefs.UnknownError,
    3: errdefs.InvalidArgumentError,
    4: errdefs.DeadlineExceededError,
    5: errdefs.NotFoundError,
    6: errdefs.AlreadyExistsError,
    7: errdefs.PermissionDeniedError,
    8: errdefs.ResourceExhaustedError,
    9: errdefs.FailedPreconditionError,
    10: errdefs.AbortedError,
    11: errdefs.OutOfRangeError,
    12: errdefs.UnimplementedError,
    13: errdefs.InternalError,
    14: errdefs.UnavailableError,
    15: errdefs.DataLossError,
    16: errdefs.UnauthenticatedError,
}

OK = 0
UNKNOWN = 2


def code_of(exc: BaseException) -> int:
    """The status code for ``exc``: its errdefs class's code, else UNKNOWN."""
    cls = errdefs.resolve(exc)
    return cls.code if cls is not None else UNKNOWN


def message_of(exc: BaseException) -> str:
    """The text sent on the wire for ``exc``.

    When the code comes from a cause or a group member, its text is what the
    peer needs: a wrapper's own text is put in front (``"loading x: not
    found"``), a group's ("unhandled errors in a TaskGroup") is dropped.
    """
    if isinstance(exc, errdefs.ArunError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename!r}" if exc.filename else exc.strerror
    inner = errdefs.origin(exc)
    if inner is not None and inner is not exc:
        if isinstance(exc, BaseExceptionGroup):
            return message_of(inner)
        outer = str(exc)
        return f"{outer}: {message_of(inner)}" if outer else message_of(inner)
    return str(exc)


def from_code(code: int, message: str) -> errdefs.ArunError:
    """The native error for a status received from a peer."""
    cls = _BY_CODE.get(code, errdefs.UnknownError)
    return cls(message)


def to_grpclib(exc: BaseException) -> tuple[object, str]:
    """(grpclib Status, message) for ``exc``; imported lazily so ttrpc-only users skip grpclib."""
    from grpclib.const import Status

    return Status(code_of(exc)), message_of(exc)
