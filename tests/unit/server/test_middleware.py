from __future__ import annotations

import pytest
from grpclib.const import Status

from arun import errdefs
from arun.server import middleware


@pytest.mark.parametrize(
    ("path", "read"),
    [
        ("/runtime.v1.RuntimeService/ListContainers", True),
        ("/runtime.v1.RuntimeService/ContainerStatus", True),
        ("/runtime.v1.RuntimeService/PodSandboxStats", True),
        ("/runtime.v1.ImageService/ImageFsInfo", True),
        ("/runtime.v1.RuntimeService/Version", True),
        ("/runtime.v1.RuntimeService/Status", True),
        ("/runtime.v1.RuntimeService/RuntimeConfig", True),
        ("/containerd.services.content.v1.Content/Read", True),
        ("/containerd.services.events.v1.Events/Subscribe", True),
        ("/runtime.v1.RuntimeService/RunPodSandbox", False),
        ("/runtime.v1.RuntimeService/UpdateRuntimeConfig", False),
        ("/runtime.v1.ImageService/PullImage", False),
        ("/containerd.services.namespaces.v1.Namespaces/Delete", False),
        ("/containerd.services.tasks.v1.Tasks/Exec", False),
    ],
)
def test_is_read(path: str, read: bool) -> None:
    assert middleware.is_read(path) is read


@pytest.mark.parametrize(
    ("exc", "status", "message"),
    [
        (errdefs.NotFoundError("image 'x': not found"), Status.NOT_FOUND, "image 'x': not found"),
        (errdefs.ConflictError("changed"), Status.FAILED_PRECONDITION, "changed"),
        (errdefs.InternalError("invariant"), Status.INTERNAL, "invariant"),
        (errdefs.UnknownError("from a peer"), Status.UNKNOWN, "from a peer"),
        (TimeoutError(), Status.DEADLINE_EXCEEDED, ""),
        (NotImplementedError("nope"), Status.UNIMPLEMENTED, "nope"),
        (KeyError("secret detail"), Status.UNKNOWN, "internal error (request r1)"),
        (ExceptionGroup("g", [errdefs.AlreadyExistsError("dup")]), Status.ALREADY_EXISTS, "dup"),
    ],
)
def test_status_of(exc: BaseException, status: Status, message: str) -> None:
    assert middleware.status_of(exc, "r1") == (status, message)


def test_cause_chain_is_resolved() -> None:
    try:
        try:
            raise errdefs.NotFoundError("missing")
        except errdefs.NotFoundError as e:
            raise RuntimeError("while loading") from e
    except RuntimeError as outer:
        assert middleware.status_of(outer, "r") == (Status.NOT_FOUND, "while loading: missing")


async def test_tracker() -> None:
    t = middleware.Tracker()
    assert await t.drain(0)
    t2 = middleware.Tracker()
    t2.enter()
    assert not await t2.drain(0.01)
    assert t2.draining
    t2.leave()
    assert await t2.drain(0.01)
