from __future__ import annotations

import pytest

from arun import leasectx, namespaces
from arun.core.leases import Resource
from arun.core.snapshots import Info, Kind
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from arun.metadata.common import Hooks
from arun.metadata.db import Database
from arun.metadata.leases import SqlLeaseManager
from arun.metadata.snapshots import NamespacedSnapshotter
from arun.testing.events import RecordingPublisher
from arun.testing.snapshotter import MemorySnapshotter


@pytest.fixture
def backend() -> MemorySnapshotter:
    return MemorySnapshotter()


@pytest.fixture
def sn(db: Database, backend: MemorySnapshotter, publisher: RecordingPublisher) -> NamespacedSnapshotter:
    return NamespacedSnapshotter(db, "fake", backend, Hooks(publisher))


async def names(sn: NamespacedSnapshotter, *fs: str) -> list[str]:
    return [i.name async for i in sn.walk(*fs)]


async def test_lifecycle(
    sn: NamespacedSnapshotter, backend: MemorySnapshotter, ns: str, publisher: RecordingPublisher
) -> None:
    mounts = await sn.prepare("active", labels={"a": "1", "containerd.io/snapshot/x": "y"})
    assert len(mounts) == 1
    # backend keys are namespaced; only inheritable labels reach the backend
    (bkey,) = backend.snaps
    assert bkey.startswith("testing/") and bkey.endswith("/active")
    assert backend.snaps[bkey].labels == {"containerd.io/snapshot/x": "y"}
    info = await sn.stat("active")
    assert (info.name, info.kind, info.parent) == ("active", Kind.ACTIVE, "")
    assert info.labels == {"a": "1", "containerd.io/snapshot/x": "y"}
    assert await sn.mounts("active") == mounts
    assert (await sn.usage("active")).size == 4096

    await sn.commit("layer1", "active", labels={"l": "1"})
    with pytest.raises(NotFoundError):
        await sn.stat("active")
    info = await sn.stat("layer1")
    assert (info.kind, info.labels) == (Kind.COMMITTED, {"l": "1"})

    await sn.prepare("child", "layer1")
    await sn.view("view", "layer1")
    assert (await sn.stat("child")).parent == "layer1"
    assert (await sn.stat("view")).kind == Kind.VIEW
    with pytest.raises(FailedPreconditionError, match="child"):
        await sn.remove("layer1")
    await sn.remove("child")
    await sn.remove("view")
    await sn.remove("layer1")
    assert await names(sn) == []
    # remove only forgets: the backend keeps the snapshots for GC
    assert len(backend.snaps) == 3
    assert publisher.topics() == [
        "/snapshot/prepare",
        "/snapshot/commit",
        "/snapshot/prepare",
        "/snapshot/remove",
        "/snapshot/remove",
        "/snapshot/remove",
    ]
    commit = publisher.events[1].event
    assert (commit.key, commit.name, commit.snapshotter) == ("active", "layer1", "fake")  # type: ignore[attr-defined]


async def test_errors(sn: NamespacedSnapshotter, backend: MemorySnapshotter, ns: str) -> None:
    await sn.prepare("a")
    with pytest.raises(AlreadyExistsError):
        await sn.prepare("a")
    with pytest.raises(NotFoundError):
        await sn.prepare("b", "missing-parent")
    with pytest.raises(InvalidArgumentError):
        await sn.prepare("")
    with pytest.raises(InvalidArgumentError):
        await sn.prepare("c", labels={"": "x"})
    # the parent must be committed: the backend refuses, and nothing is left behind
    with pytest.raises(InvalidArgumentError):
        await sn.prepare("d", "a")
    assert await names(sn) == ["a"]
    assert len(backend.snaps) == 1
    with pytest.raises(NotFoundError):
        await sn.commit("x", "missing")
    await sn.commit("done", "a")
    await sn.prepare("a")
    with pytest.raises(AlreadyExistsError):
        await sn.commit("done", "a")
    assert (await sn.stat("a")).kind == Kind.ACTIVE
    # committing a view is refused by the backend; the metadata stays as it was
    await sn.view("v", "done")
    with pytest.raises(FailedPreconditionError):
        await sn.commit("v2", "v")
    assert await names(sn) == ["a", "done", "v"]
    with pytest.raises(NotFoundError):
        await sn.remove("nope")
    with pytest.raises(NotFoundError):
        await sn.mounts("nope")


async def test_isolation(sn: NamespacedSnapshotter, backend: MemorySnapshotter) -> None:
    with namespaces.use("one"):
        await sn.prepare("k")
        await sn.commit("base", "k")
    with namespaces.use("two"):
        assert await names(sn) == []
        with pytest.raises(NotFoundError):
            await sn.prepare("k", "base")  # parents resolve per namespace
        await sn.prepare("k")
        await sn.commit("base", "k")
    assert len(backend.snaps) == 2
    with namespaces.use("one"):
        assert await names(sn) == ["base"]


async def test_update_and_filters(sn: NamespacedSnapshotter, backend: MemorySnapshotter, ns: str) -> None:
    await sn.prepare("k1", labels={"x": "1"})
    await sn.commit("c1", "k1", labels={"x": "1"})
    await sn.prepare("k2", "c1", labels={"x": "2"})
    info = await sn.update(Info("k2", Kind.UNKNOWN, labels={"y": "3", "containerd.io/snapshot/z": "4"}))
    assert info.labels == {"y": "3", "containerd.io/snapshot/z": "4"}
    assert info.kind == Kind.ACTIVE and info.parent == "c1"
    info = await sn.update(Info("k2", Kind.UNKNOWN, labels={"w": "5"}), ["labels.w"])
    assert info.labels == {"y": "3", "containerd.io/snapshot/z": "4", "w": "5"}
    bkey = next(k for k in backend.snaps if k.endswith("/k2"))
    assert backend.snaps[bkey].labels == {"containerd.io/snapshot/z": "4"}
    with pytest.raises(InvalidArgumentError):
        await sn.update(Info("k2", Kind.UNKNOWN), ["parent"])
    with pytest.raises(NotFoundError):
        await sn.update(Info("zz", Kind.UNKNOWN))

    assert await names(sn, "kind==committed") == ["c1"]
    assert await names(sn, "kind==active") == ["k2"]
    assert await names(sn, "parent==c1") == ["k2"]
    assert await names(sn, "labels.x==1") == ["c1"]
    assert await names(sn, "name~=^k", "labels.x==1") == ["c1", "k2"]
    with pytest.raises(InvalidArgumentError):
        await names(sn, "kind=committed")


async def test_snapshot_ref_target(sn: NamespacedSnapshotter, ns: str) -> None:
    await sn.prepare("extract-1", labels={"containerd.io/snapshot.ref": "sha256:chain"})
    await sn.commit("sha256:chain", "extract-1")
    with pytest.raises(AlreadyExistsError, match="target"):
        await sn.prepare("extract-2", labels={"containerd.io/snapshot.ref": "sha256:chain"})
    assert await names(sn) == ["sha256:chain"]


async def test_lease_attachment(db: Database, sn: NamespacedSnapshotter, ns: str) -> None:
    lm = SqlLeaseManager(db)
    await lm.create("l1")
    with leasectx.use("l1"):
        await sn.prepare("k")
        assert await lm.list_resources("l1") == [Resource("k", "snapshots/fake")]
        await sn.commit("c", "k")
        assert await lm.list_resources("l1") == [Resource("c", "snapshots/fake")]
        await sn.remove("c")
        assert await lm.list_resources("l1") == []


async def test_garbage_collect_backend(
    sn: NamespacedSnapshotter, backend: MemorySnapshotter, ns: str
) -> None:
    await sn.prepare("k")
    await sn.commit("base", "k")
    await sn.prepare("top", "base")
    await sn.prepare("other")
    await sn.remove("top")
    await sn.remove("base")
    assert len(backend.snaps) == 3
    assert await sn.garbage_collect() == 2
    assert [k.rsplit("/", 1)[1] for k in backend.snaps] == ["other"]
    assert backend.cleaned == 1
