from __future__ import annotations

import pytest

from arun import namespaces
from arun.core import typeurl
from arun.core.containers import Container, RuntimeInfo
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from arun.metadata.common import Hooks
from arun.metadata.containers import SqlContainerStore
from arun.metadata.db import Database
from arun.testing.events import RecordingPublisher

SPEC = typeurl.Any("types.containerd.io/opencontainers/runtime-spec/1/Spec", b'{"ociVersion":"1.1.0"}')


def container(id: str, **kw: object) -> Container:
    c = Container(id=id, runtime=RuntimeInfo("io.containerd.runc.v2"), spec=SPEC)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


@pytest.fixture
def store(db: Database, publisher: RecordingPublisher) -> SqlContainerStore:
    return SqlContainerStore(db, Hooks(publisher))


async def test_create_get_roundtrip(store: SqlContainerStore, ns: str) -> None:
    ext = {"ext1": typeurl.Any("x/y", b"\x01\x02")}
    created = await store.create(
        container(
            "c1",
            labels={"a": "1", "empty": ""},
            image="docker.io/library/busybox:latest",
            snapshotter="overlayfs",
            snapshot_key="c1-snap",
            extensions=ext,
            runtime=RuntimeInfo("io.containerd.runc.v2", typeurl.Any("opts", b"o")),
        )
    )
    assert created.created_at is not None and created.created_at == created.updated_at
    got = await store.get("c1")
    assert got == created
    assert got.labels == {"a": "1"}  # an empty value means unset
    assert got.spec == SPEC
    assert got.extensions == ext
    assert got.runtime.options == typeurl.Any("opts", b"o")


async def test_namespace_required_and_isolation(store: SqlContainerStore) -> None:
    with pytest.raises(FailedPreconditionError):
        await store.create(container("c1"))
    with namespaces.use("one"):
        await store.create(container("c1"))
    with namespaces.use("two"):
        with pytest.raises(NotFoundError):
            await store.get("c1")
        assert await store.list() == []
        await store.create(container("c1"))  # the same id is free in another namespace
        await store.delete("c1")
    with namespaces.use("one"):
        assert [c.id for c in await store.list()] == ["c1"]


@pytest.mark.parametrize("bad", ["", "a" * 77, "has space", "-lead", "trail-", "a..b", "a/b"])
async def test_invalid_ids(store: SqlContainerStore, ns: str, bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.create(container(bad))
    assert await store.list() == []


async def test_validation(store: SqlContainerStore, ns: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"Runtime\.Name"):
        await store.create(Container("c1", spec=SPEC))
    with pytest.raises(InvalidArgumentError, match="Spec"):
        await store.create(Container("c1", runtime=RuntimeInfo("r")))
    with pytest.raises(InvalidArgumentError, match="Snapshotter"):
        await store.create(container("c1", snapshot_key="k"))
    with pytest.raises(InvalidArgumentError):
        await store.create(container("c1", labels={"": "v"}))
    with pytest.raises(InvalidArgumentError):
        await store.create(container("c1", labels={"k": "v" * 5000}))


async def test_duplicate_and_missing(
    store: SqlContainerStore, ns: str, publisher: RecordingPublisher
) -> None:
    await store.create(container("c1"))
    with pytest.raises(AlreadyExistsError):
        await store.create(container("c1"))
    with pytest.raises(NotFoundError):
        await store.delete("nope")
    with pytest.raises(NotFoundError):
        await store.update(container("nope"))
    assert publisher.topics() == ["/containers/create"]


async def test_list_filters(store: SqlContainerStore, ns: str) -> None:
    await store.create(container("web-1", labels={"app": "web", "io.k8s.pod": "p1"}, image="nginx"))
    await store.create(container("web-2", labels={"app": "web"}, image="nginx"))
    await store.create(container("db-1", labels={"app": "db"}, image="postgres"))

    async def ids(*fs: str) -> list[str]:
        return [c.id for c in await store.list(*fs)]

    assert await ids() == ["db-1", "web-1", "web-2"]
    assert await ids("labels.app==web") == ["web-1", "web-2"]
    assert await ids("labels.app==web,image==nginx", "id==db-1") == ["db-1", "web-1", "web-2"]
    assert await ids('labels."io.k8s.pod"==p1') == ["web-1"]
    assert await ids("labels.io.k8s.pod") == ["web-1"]
    assert await ids("id~=^web-[2-9]$") == ["web-2"]
    assert await ids("runtime.name==io.containerd.runc.v2,labels.app!=web") == ["db-1"]
    with pytest.raises(InvalidArgumentError):
        await store.list("labels.app==")
    with pytest.raises(InvalidArgumentError):
        await store.list("id~=[")


async def test_update_field_paths(store: SqlContainerStore, ns: str, publisher: RecordingPublisher) -> None:
    await store.create(
        container(
            "c1",
            labels={"a": "1", "b": "2"},
            image="img1",
            snapshotter="overlayfs",
            snapshot_key="k1",
            extensions={"e1": typeurl.Any("t", b"1"), "e2": typeurl.Any("t", b"2")},
        )
    )
    upd = container(
        "c1",
        labels={"a": "10", "c": "3"},
        image="img2",
        snapshotter="other",
        snapshot_key="k2",
        extensions={"e1": typeurl.Any("t", b"one")},
    )
    got = await store.update(upd, "labels.a", "labels.b", "extensions.e1")
    assert got.labels == {"a": "10"}
    assert got.image == "img1"
    assert got.extensions == {"e1": typeurl.Any("t", b"one"), "e2": typeurl.Any("t", b"2")}
    got = await store.update(upd, "image", "snapshotkey")
    assert (got.image, got.snapshot_key, got.snapshotter) == ("img2", "k2", "overlayfs")
    got = await store.update(upd, "labels", "extensions")
    assert got.labels == {"a": "10", "c": "3"}
    assert got.extensions == {"e1": typeurl.Any("t", b"one")}
    assert got.created_at is not None and got.updated_at is not None and got.updated_at >= got.created_at
    assert await store.get("c1") == got

    with pytest.raises(InvalidArgumentError, match="runtime"):
        await store.update(upd, "runtime")
    with pytest.raises(InvalidArgumentError, match="snapshotter"):
        await store.update(upd, "snapshotter")
    # a full update may not change the immutable fields
    with pytest.raises(InvalidArgumentError, match="immutable"):
        await store.update(upd)
    full = container("c1", labels={"z": "1"}, snapshotter="overlayfs", image="img3", snapshot_key="k3")
    got = await store.update(full)
    assert (got.labels, got.image, got.snapshot_key, got.extensions) == ({"z": "1"}, "img3", "k3", {})
    assert publisher.topics() == ["/containers/create"] + ["/containers/update"] * 4


async def test_events_after_commit_only(db: Database, ns: str) -> None:
    pub = RecordingPublisher()
    store = SqlContainerStore(db, Hooks(pub))
    with pytest.raises(RuntimeError):
        async with db.update():
            await store.create(container("c1"))
            assert pub.events == []  # not before the commit
            raise RuntimeError("roll back")
    assert pub.events == []
    with pytest.raises(NotFoundError):
        await store.get("c1")
    await store.create(container("c1"))
    await store.delete("c1")
    assert [(e.namespace, e.topic) for e in pub.events] == [
        ("testing", "/containers/create"),
        ("testing", "/containers/delete"),
    ]
    create = pub.events[0].event
    assert create.id == "c1" and create.runtime.name == "io.containerd.runc.v2"  # type: ignore[attr-defined]
