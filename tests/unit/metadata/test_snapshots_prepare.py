"""Prepare/View as one write transaction around the backend's work: nothing half-created on any
failure or cancellation, a committed record always has its backend snapshot, backend keys are
never reused."""

from __future__ import annotations

import asyncio

import pytest

from arun import leasectx
from arun.errdefs import AlreadyExistsError, InternalError, NotFoundError
from arun.metadata.common import Hooks
from arun.metadata.db import Database
from arun.metadata.leases import SqlLeaseManager
from arun.metadata.snapshots import NamespacedSnapshotter
from arun.testing.events import RecordingPublisher
from arun.testing.snapshotter import MemorySnapshotter


class SlowSnapshotter(MemorySnapshotter):
    """Yields to the loop a few times inside prepare, so a cancel can land mid-way."""

    async def prepare(self, key: str, parent: str = "", *, labels: object = None) -> list:  # type: ignore[type-arg]
        for _ in range(3):
            await asyncio.sleep(0)
        return await super().prepare(key, parent, labels=labels)  # type: ignore[arg-type]


@pytest.fixture
def backend() -> SlowSnapshotter:
    return SlowSnapshotter()


@pytest.fixture
def hooks(publisher: RecordingPublisher) -> Hooks:
    return Hooks(publisher)


@pytest.fixture
def sn(db: Database, backend: SlowSnapshotter, hooks: Hooks) -> NamespacedSnapshotter:
    return NamespacedSnapshotter(db, "fake", backend, hooks)


async def records(db: Database) -> dict[str, str]:
    async with db.view() as tx:
        rows = await tx.fetchall("SELECT key, backend_key FROM snapshots")
    return {r["key"]: r["backend_key"] for r in rows}


async def test_missing_lease_creates_nothing(
    sn: NamespacedSnapshotter, backend: SlowSnapshotter, ns: str
) -> None:
    with leasectx.use("no-such-lease"), pytest.raises(NotFoundError):
        await sn.prepare("k")
    assert backend.snaps == {}
    assert await records(sn.db) == {}


async def test_missing_parent_creates_nothing(
    sn: NamespacedSnapshotter, backend: SlowSnapshotter, ns: str
) -> None:
    with pytest.raises(NotFoundError, match="parent"):
        await sn.prepare("k", "nope")
    assert backend.snaps == {}


async def test_failure_after_the_backend_removes_its_snapshot(
    sn: NamespacedSnapshotter, backend: SlowSnapshotter, hooks: Hooks, ns: str, publisher: RecordingPublisher
) -> None:
    def boom(tx: object, *, dirty: bool = False) -> None:
        raise InternalError("late failure")

    hooks.mutated = boom  # type: ignore[method-assign]
    with pytest.raises(InternalError):
        await sn.prepare("k")
    assert backend.snaps == {}
    assert await records(sn.db) == {}
    assert publisher.topics() == []
    del hooks.mutated
    # the retry gets a fresh backend key
    await sn.prepare("k")
    assert len(backend.snaps) == 1
    assert list(backend.snaps) == list((await records(sn.db)).values())


async def test_conflicts_still_lease_the_existing_snapshot(
    db: Database, sn: NamespacedSnapshotter, backend: SlowSnapshotter, hooks: Hooks, ns: str
) -> None:
    lm = SqlLeaseManager(db, hooks)
    await sn.prepare("x")
    await sn.commit("layer", "x")
    await lm.create("l")
    with leasectx.use("l"):
        with pytest.raises(AlreadyExistsError, match="target"):
            await sn.prepare("extract", "", labels={"containerd.io/snapshot.ref": "layer"})
        await sn.prepare("k")
        with pytest.raises(AlreadyExistsError):
            await sn.prepare("k")
    assert {(r.type, r.id) for r in await lm.list_resources("l")} == {
        ("snapshots/fake", "layer"),
        ("snapshots/fake", "k"),
    }
    assert len(backend.snaps) == 2


@pytest.mark.parametrize("turns", range(14))
async def test_cancelled_prepare_leaves_record_and_backend_consistent(
    sn: NamespacedSnapshotter, backend: SlowSnapshotter, hooks: Hooks, ns: str, turns: int
) -> None:
    await sn.prepare("base-x")
    await sn.commit("base", "base-x")
    task = asyncio.create_task(sn.prepare("k", "base"))
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    recs = await records(sn.db)
    if "k" in recs:
        # committed: its backend snapshot is there
        assert recs["k"] in backend.snaps
    # what has no record is gone, or the backend is marked for the next sweep
    orphans = set(backend.snaps) - set(recs.values())
    if orphans:
        assert "fake" in hooks.dirty_snapshotters
        await sn.garbage_collect()
        assert set(backend.snaps) == set(recs.values())
    # and a retry works with a backend key not used before
    if "k" not in recs:
        await sn.prepare("k", "base")
    recs = await records(sn.db)
    assert set(backend.snaps) == set(recs.values())


class CountingMounts(SlowSnapshotter):
    def __init__(self) -> None:
        super().__init__()
        self.mount_calls = 0
        self.during_mounts: object = None

    async def mounts(self, key: str) -> list:  # type: ignore[type-arg]
        self.mount_calls += 1
        if callable(self.during_mounts):
            self.during_mounts()
        return await super().mounts(key)


async def test_mounts_are_kept_per_key(db: Database, hooks: Hooks, ns: str) -> None:
    backend = CountingMounts()
    sn = NamespacedSnapshotter(db, "fake", backend, hooks)
    prepared = await sn.prepare("k")
    assert await sn.mounts("k") == prepared
    assert backend.mount_calls == 0  # what prepare returned
    # a commit moves the snapshot: the key is gone, the new active one has its own mounts
    await sn.commit("layer", "k")
    with pytest.raises(NotFoundError):
        await sn.mounts("k")
    top = await sn.prepare("top", "layer")
    assert await sn.mounts("top") == top == await backend.mounts((await records(db))["top"])
    # removed and prepared again under the same name: a new backend key, fresh mounts
    await sn.remove("top")
    await sn.garbage_collect()
    view = await sn.view("top", "layer")
    assert await sn.mounts("top") == view != top
    assert all(o != "rw" for m in view for o in m.options)


async def test_mounts_read_that_races_a_drop_is_not_kept(db: Database, hooks: Hooks, ns: str) -> None:
    backend = CountingMounts()
    sn = NamespacedSnapshotter(db, "fake", backend, hooks)
    await sn.prepare("a")
    sn._mounts.clear()
    backend.during_mounts = lambda: sn._forget_mounts("other-ns", "fake", "x")
    await sn.mounts("a")
    backend.during_mounts = None
    await sn.mounts("a")
    assert backend.mount_calls == 2
    await sn.mounts("a")
    assert backend.mount_calls == 2


async def test_mounts_cache_is_bounded(
    db: Database, hooks: Hooks, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NamespacedSnapshotter, "MOUNTS_CACHE_SIZE", 3)
    sn = NamespacedSnapshotter(db, "fake", CountingMounts(), hooks)
    for i in range(5):
        await sn.prepare(f"s{i}")
    assert len(sn._mounts) == 3


async def test_mounts_of_a_collected_snapshot_are_not_served(db: Database, hooks: Hooks, ns: str) -> None:
    from arun import namespaces
    from arun.metadata.gc import collect_metadata

    backend = CountingMounts()
    sn = NamespacedSnapshotter(db, "fake", backend, hooks)
    await sn.prepare("loose")  # no lease, no root: garbage
    assert await sn.mounts("loose")
    with namespaces.use("other"):
        with pytest.raises(NotFoundError):
            await sn.mounts("loose")  # another namespace's key is another snapshot
    assert await collect_metadata(db, hooks) == {"snapshots": 1}
    with pytest.raises(NotFoundError):
        await sn.mounts("loose")
    # the same key prepared again gets its new snapshot's mounts
    again = await sn.prepare("loose")
    assert await sn.mounts("loose") == again
    await sn.remove("loose")
    with pytest.raises(NotFoundError):
        await sn.mounts("loose")
