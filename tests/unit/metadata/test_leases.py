from __future__ import annotations

import pytest

from arun import leasectx, namespaces
from arun.core.leases import Resource
from arun.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError, UnimplementedError
from arun.metadata.db import Database
from arun.metadata.leases import SqlLeaseManager

D1 = "sha256:" + "a" * 64


@pytest.fixture
def lm(db: Database) -> SqlLeaseManager:
    return SqlLeaseManager(db)


async def test_create_list_delete(lm: SqlLeaseManager, ns: str) -> None:
    lease = await lm.create("l1", {"containerd.io/gc.expire": "2030-01-01T00:00:00Z", "x": ""})
    assert lease.labels == {"containerd.io/gc.expire": "2030-01-01T00:00:00Z"}
    assert lease.created_at is not None
    with pytest.raises(AlreadyExistsError):
        await lm.create("l1")
    with pytest.raises(InvalidArgumentError):
        await lm.create("")
    await lm.create("l2", {"team": "a"})
    assert [lease.id for lease in await lm.list()] == ["l1", "l2"]
    assert [lease.id for lease in await lm.list("labels.team==a")] == ["l2"]
    assert [lease.id for lease in await lm.list("id==l1")] == ["l1"]
    with pytest.raises(InvalidArgumentError):
        await lm.list("id==")
    await lm.delete("l1")
    with pytest.raises(NotFoundError):
        await lm.delete("l1")
    assert [lease.id for lease in await lm.list()] == ["l2"]


async def test_namespaced(lm: SqlLeaseManager) -> None:
    with namespaces.use("a"):
        await lm.create("l1")
    with namespaces.use("b"):
        assert await lm.list() == []
        with pytest.raises(NotFoundError):
            await lm.list_resources("l1")
        with pytest.raises(NotFoundError):
            await lm.add_resource("l1", Resource(D1, "content"))


async def test_resources(lm: SqlLeaseManager, ns: str) -> None:
    await lm.create("l1")
    resources = [
        Resource("snap1", "snapshots/overlayfs"),
        Resource(D1, "content"),
        Resource("ref1", "ingests"),
        Resource("docker.io/x:1", "images"),
    ]
    for r in resources:
        await lm.add_resource("l1", r)
    await lm.add_resource("l1", resources[0])  # idempotent
    assert await lm.list_resources("l1") == [
        Resource(D1, "content"),
        Resource("docker.io/x:1", "images"),
        Resource("ref1", "ingests"),
        Resource("snap1", "snapshots/overlayfs"),
    ]
    await lm.delete_resource("l1", Resource(D1, "content"))
    await lm.delete_resource("l1", Resource(D1, "content"))  # absent: fine
    assert Resource(D1, "content") not in await lm.list_resources("l1")
    with pytest.raises(NotFoundError):
        await lm.add_resource("nope", Resource(D1, "content"))


@pytest.mark.parametrize(
    ("resource", "error"),
    [
        (Resource("not-a-digest", "content"), InvalidArgumentError),
        (Resource(D1, "content/x"), InvalidArgumentError),
        (Resource("k", "snapshots"), InvalidArgumentError),
        (Resource("k", "snapshots/a/b"), InvalidArgumentError),
        (Resource("k", "containers"), UnimplementedError),
        (Resource("", "ingests"), InvalidArgumentError),
    ],
)
async def test_bad_resources(
    lm: SqlLeaseManager, ns: str, resource: Resource, error: type[Exception]
) -> None:
    await lm.create("l1")
    with pytest.raises(error):
        await lm.add_resource("l1", resource)
    assert await lm.list_resources("l1") == []


async def test_delete_drops_resources_and_syncs(lm: SqlLeaseManager, ns: str) -> None:
    calls: list[str] = []

    async def collect() -> None:
        calls.append("gc")

    lm.collect = collect
    await lm.create("l1")
    await lm.add_resource("l1", Resource(D1, "content"))
    await lm.delete("l1")
    assert calls == []
    await lm.create("l1")
    assert await lm.list_resources("l1") == []
    await lm.delete("l1", sync=True)
    assert calls == ["gc"]


async def test_leasectx(ns: str) -> None:
    assert leasectx.current() is None
    with leasectx.use("x"):
        assert leasectx.current() == "x"
        with leasectx.use(None):
            assert leasectx.current() is None
    assert leasectx.current() is None
