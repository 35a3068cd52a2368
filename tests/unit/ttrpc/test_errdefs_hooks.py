"""With arun's errdefs plugged into the hooks, an error class survives the round trip.

The ttrpc package never imports errdefs; this test wires them the way arun does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from arun import deadline, errdefs, namespaces
from arun.errdefs import grpc as egrpc
from arun.testing.ttrpc import ECHO_SERVICE, EchoRequest, EchoResponse, echo_descriptor
from arun.ttrpc import Client, RequestInfo, Server, ServiceStub

pytestmark = pytest.mark.asyncio

CLASSES = [
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
BY_NAME = {cls.__name__: cls for cls in CLASSES}


@contextlib.contextmanager
def arun_request_context(info: RequestInfo) -> Iterator[None]:
    """What arun's ttrpc server plugin does: namespace and deadline contextvars per request."""
    with (
        namespaces.use(info.metadata.first(namespaces.TTRPC_HEADER) or ""),
        deadline.use(info.timeout),
    ):
        yield


class Raiser:
    async def Unary(self, req: Any) -> Any:
        if req.text == "namespace":
            ns = namespaces.required()
            left = deadline.remaining()
            return EchoResponse(text=f"{ns} {left is not None and 0 < left <= 5}")
        if req.text == "builtin":
            raise FileExistsError("container 'c1' already exists")
        if req.text == "wrapped":
            try:
                raise errdefs.NotFoundError("snapshot 's1'")
            except errdefs.NotFoundError as exc:
                raise RuntimeError("lookup failed") from exc
        raise BY_NAME[req.text](f"container {req.text!r} in namespace 'default'")


@pytest_asyncio.fixture
async def stub(sock_path: str) -> AsyncIterator[ServiceStub]:
    srv = Server(
        to_status=lambda exc: (egrpc.code_of(exc), egrpc.message_of(exc)),
        request_context=arun_request_context,
    )
    srv.register(ECHO_SERVICE, Raiser())
    await srv.serve_unix(sock_path)
    client = await Client.connect(
        sock_path,
        from_status=egrpc.from_code,
        deadline=deadline.remaining,
        metadata=lambda: [(namespaces.TTRPC_HEADER, namespaces.current() or "")],
    )
    yield ServiceStub(client, echo_descriptor)
    await client.close()
    await srv.close()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
async def test_error_class_survives(stub: ServiceStub, cls: type[errdefs.ArunError]) -> None:
    with pytest.raises(cls) as info:
        await stub.Unary(EchoRequest(text=cls.__name__))
    assert type(info.value) is cls
    assert info.value.message == f"container {cls.__name__!r} in namespace 'default'"


async def test_builtins_and_causes_resolve(stub: ServiceStub) -> None:
    with pytest.raises(errdefs.AlreadyExistsError, match="container 'c1' already exists"):
        await stub.Unary(EchoRequest(text="builtin"))
    with pytest.raises(errdefs.NotFoundError):
        await stub.Unary(EchoRequest(text="wrapped"))


async def test_namespace_and_deadline_travel(stub: ServiceStub) -> None:
    with namespaces.use("k8s.io"), deadline.use(5):
        reply = await stub.Unary(EchoRequest(text="namespace"))
    assert reply.text == "k8s.io True"
    with pytest.raises(errdefs.FailedPreconditionError, match="namespace is required"):
        await stub.Unary(EchoRequest(text="namespace"))


async def test_client_deadline_is_deadline_exceeded_error(stub: ServiceStub) -> None:
    with deadline.use(-1), pytest.raises(errdefs.DeadlineExceededError):
        await stub.Unary(EchoRequest(text="namespace"))
