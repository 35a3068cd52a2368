from __future__ import annotations

import pytest

from arun import errdefs, identifiers, namespaces
from arun.errdefs import grpc as egrpc

ALL = [
    errdefs.CanceledError,
    errdefs.UnknownError,
    errdefs.InvalidArgumentError,
    errdefs.DeadlineExceededError,
    errdefs.NotFoundError,
    errdefs.AlreadyExistsError,
    errdefs.PermissionDeniedError,
    errdefs.ResourceExhaustedError,
    errdefs.FailedPreconditionError,
    errdefs.AbortedError,
    errdefs.OutOfRangeError,
    errdefs.UnimplementedError,
    errdefs.InternalError,
    errdefs.UnavailableError,
    errdefs.DataLossError,
    errdefs.UnauthenticatedError,
]


@pytest.mark.parametrize("cls", ALL)
def test_round_trip_through_code(cls: type[errdefs.ArunError]) -> None:
    exc = cls("container 'x' in namespace 'default'")
    back = egrpc.from_code(egrpc.code_of(exc), egrpc.message_of(exc))
    assert type(back) is cls
    assert back.message == exc.message


def test_codes_are_the_grpc_numbers() -> None:
    assert [c.code for c in ALL] == list(range(1, 17))
    assert errdefs.ConflictError.code == errdefs.NotModifiedError.code == 9


def test_builtins_and_wrapping_resolve() -> None:
    assert egrpc.code_of(FileNotFoundError(2, "No such file", "/x")) == 5
    assert egrpc.code_of(FileExistsError()) == 6
    assert egrpc.code_of(TimeoutError()) == 4
    assert egrpc.code_of(NotImplementedError()) == 12
    assert egrpc.code_of(ValueError("x")) == 2
    try:
        try:
            raise errdefs.NotFoundError("blob")
        except errdefs.NotFoundError as inner:
            raise RuntimeError("while pulling") from inner
    except RuntimeError as outer:
        assert errdefs.resolve(outer) is errdefs.NotFoundError
    group = ExceptionGroup("many", [ValueError("a"), errdefs.AlreadyExistsError("b")])
    assert errdefs.resolve(group) is errdefs.AlreadyExistsError
    assert egrpc.from_code(99, "?").code == 2


@pytest.mark.parametrize("good", ["a", "default", "k8s.io", "a-b_c.d", "A1", "x" * 76])
def test_valid_identifiers(good: str) -> None:
    assert identifiers.validate(good) == good


@pytest.mark.parametrize("bad", ["", "-a", "a-", "a..b", "a b", "a/b", "é", "x" * 77, "_a", "a__b"])
def test_invalid_identifiers(bad: str) -> None:
    with pytest.raises(errdefs.InvalidArgumentError):
        identifiers.validate(bad)


def test_namespace_required() -> None:
    with pytest.raises(errdefs.FailedPreconditionError, match="namespace is required"):
        namespaces.required()
    with namespaces.use("k8s.io"):
        assert namespaces.required() == "k8s.io"
        with namespaces.use("bad name"), pytest.raises(errdefs.InvalidArgumentError):
            namespaces.required()
    assert namespaces.current() is None
