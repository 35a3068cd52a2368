"""Garbage collection sweeps a backend only when it is dirty (containerd's dirtyCS / dirtySS):
a collection that removed nothing of a backend leaves it alone, and every way a backend object
can lose its last record still gets it swept — by the collection that removed the record, or the
next one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from arun import leasectx, namespaces
from arun.content.local import LocalStore
from arun.core import typeurl
from arun.core.containers import Container, RuntimeInfo
from arun.core.content import Status, digest_bytes
from arun.core.leases import Resource
from arun.core.mount import Mount
from arun.errdefs import InternalError
from arun.metadata import content as content_mod
from arun.metadata.db import Database
from arun.metadata.gc import Scheduler, SchedulerConfig, Stats, gc_labels
from arun.metadata.meta import Metadata
from arun.testing.snapshotter import MemorySnapshotter
from tests.unit.metadata.blobs import put

SPEC = typeurl.Any("spec", b"{}")


class CountingContent(LocalStore):
    """A local store that counts how often garbage collection walks it."""

    walks = 0

    async def list_statuses(self, *filters: str) -> list:  # type: ignore[type-arg]
        self.walks += 1
        return await super().list_statuses(*filters)


class FlakySnapshotter(MemorySnapshotter):
    """Counts sweeps (walks); can fail a prepare after creating the snapshot, and removals."""

    def __init__(self) -> None:
        super().__init__()
        self.walks = 0
        self.fail_prepare = False
        self.fail_remove = False

    async def walk(self, *filters: str) -> AsyncIterator:  # type: ignore[type-arg]
        self.walks += 1
        async for i in super().walk(*filters):
            yield i

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        mounts = await super().prepare(key, parent, labels=labels)
        if self.fail_prepare:
            raise InternalError("prepare failed half-way")
        return mounts

    async def remove(self, key: str) -> None:
        if self.fail_remove:
            raise InternalError("cannot remove now")
        await super().remove(key)


@pytest.fixture
async def meta(db: Database, tmp_path: Path) -> AsyncIterator[Metadata]:
    m = Metadata(
        db,
        content=CountingContent(tmp_path / "content"),
        snapshotters={"a": FlakySnapshotter(), "b": FlakySnapshotter()},
    )
    yield m


def cs_backend(meta: Metadata) -> CountingContent:
    b = meta.content_store().backend
    assert isinstance(b, CountingContent)
    return b


def sn_backend(meta: Metadata, name: str = "a") -> FlakySnapshotter:
    b = meta.snapshotter(name).backend
    assert isinstance(b, FlakySnapshotter)
    return b


def walks(meta: Metadata) -> tuple[int, int, int]:
    return cs_backend(meta).walks, sn_backend(meta, "a").walks, sn_backend(meta, "b").walks


async def on_disk(meta: Metadata) -> set[str]:
    return {i.digest async for i in cs_backend(meta).walk()}


async def clean(meta: Metadata) -> None:
    """The start-up collection: everything starts dirty and is swept once."""
    before = walks(meta)
    await meta.garbage_collect()
    assert walks(meta) == tuple(x + 1 for x in before)


async def test_start_up_sweeps_everything_then_a_clean_collection_sweeps_nothing(
    meta: Metadata, ns: str
) -> None:
    await clean(meta)
    # Records were added and changed, none removed: no backend needs a sweep.
    await meta.leases.create("l")
    with leasectx.use("l"):
        await put(meta, b"kept")
        await meta.snapshotter("a").prepare("s1")
    await meta.containers.create(Container("c", runtime=RuntimeInfo("rt"), spec=SPEC))
    stats = await meta.garbage_collect()
    assert walks(meta) == (1, 1, 1)
    assert stats.snapshots_removed == {}
    # and nothing referenced went anywhere
    assert await on_disk(meta) == {digest_bytes(b"kept")}
    assert len(sn_backend(meta).snaps) == 1


async def test_a_deleted_lease_frees_its_blob_and_snapshot_in_one_collection(meta: Metadata, ns: str) -> None:
    await clean(meta)
    await meta.leases.create("l")
    with leasectx.use("l"):
        d = await put(meta, b"leased")
        await meta.snapshotter("a").prepare("s1")
    await meta.leases.delete("l")
    stats = await meta.garbage_collect()
    assert d not in await on_disk(meta)
    assert sn_backend(meta).snaps == {}
    assert stats.blobs_removed == 1
    assert stats.snapshots_removed == {"a": 1}
    # only the snapshotter that lost a record was swept
    assert walks(meta) == (2, 2, 1)


async def test_a_collection_that_only_drops_a_lease_sweeps_no_backend(meta: Metadata, ns: str) -> None:
    # The `ctr containers create` pattern: the lease's snapshot is now the container's.
    await clean(meta)
    await meta.leases.create("l")
    with leasectx.use("l"):
        await meta.snapshotter("a").prepare("rootfs")
    await meta.containers.create(
        Container("c", runtime=RuntimeInfo("rt"), spec=SPEC, snapshotter="a", snapshot_key="rootfs")
    )
    await meta.leases.delete("l")
    stats = await meta.garbage_collect()
    assert stats.removed == {}
    assert walks(meta) == (1, 1, 1)
    assert len(sn_backend(meta).snaps) == 1
    # once the container goes, its snapshot follows
    await meta.containers.delete("c")
    await meta.garbage_collect()
    assert sn_backend(meta).snaps == {}


async def test_content_delete_makes_the_content_store_dirty(meta: Metadata, ns: str) -> None:
    await clean(meta)
    await meta.containers.create(Container("c", runtime=RuntimeInfo("rt"), spec=SPEC))
    d = await put(meta, b"blob")  # no lease, no root: collectable
    kept = await put(meta, b"kept-by-other-ns")
    with namespaces.use("other"):
        await put(meta, b"kept-by-other-ns", **{"containerd.io/gc.root": "1"})
    await meta.content_store().delete(d)
    await meta.content_store().delete(kept)
    stats = await meta.garbage_collect()
    assert await on_disk(meta) == {kept}
    assert stats.blobs_removed == 1
    assert walks(meta) == (2, 1, 1)


async def test_snapshot_remove_makes_its_snapshotter_dirty(meta: Metadata, ns: str) -> None:
    sn = meta.snapshotter("b")
    await sn.prepare("x")
    await sn.commit("base", "x")
    await sn.prepare("child", "base")
    await meta.containers.create(
        Container("c", runtime=RuntimeInfo("rt"), spec=SPEC, snapshotter="b", snapshot_key="child")
    )
    await clean(meta)
    await sn.remove("child")
    await meta.containers.delete("c")
    await meta.garbage_collect()
    # the parent went with its last child
    assert sn_backend(meta, "b").snaps == {}
    assert walks(meta) == (1, 1, 2)


async def test_stale_ingest_is_aborted_once_its_record_expires(meta: Metadata, ns: str) -> None:
    cs = meta.content_store()
    w = await cs.writer("loose")
    await w.write(b"partial")
    await w.close()
    await clean(meta)
    await meta.garbage_collect()
    assert [s.ref for s in await cs_backend(meta).list_statuses()] != []
    async with meta.db.update() as tx:
        await tx.execute("UPDATE ingests SET expires_at = 1")
    stats = await meta.garbage_collect()
    assert stats.removed == {"ingests": 1}
    assert stats.ingests_aborted == 1
    assert await cs_backend(meta).list_statuses() == []


async def test_ingest_of_a_deleted_lease_is_aborted(meta: Metadata, ns: str) -> None:
    await clean(meta)
    await meta.leases.create("pull")
    with leasectx.use("pull"):
        w = await meta.content_store().writer("in-flight")
        await w.write(b"half")
        await w.close()
    await meta.leases.delete("pull")
    stats = await meta.garbage_collect()
    assert stats.ingests_aborted == 1
    assert await cs_backend(meta).list_statuses() == []


async def test_ingest_in_progress_is_kept(meta: Metadata, ns: str) -> None:
    await clean(meta)
    await meta.leases.create("pull")
    with leasectx.use("pull"):
        w = await meta.content_store().writer("in-flight")
        await w.write(b"half")
    await meta.content_store().delete(await put(meta, b"other"))  # content store dirty
    await meta.garbage_collect()
    assert [s.ref async for s in _statuses(meta)] == ["in-flight"]
    await w.write(b"-done")
    with leasectx.use("pull"):
        await w.commit(9)
    assert digest_bytes(b"half-done") in await on_disk(meta)


async def _statuses(meta: Metadata) -> AsyncIterator[Status]:
    for s in await meta.content_store().list_statuses():
        yield s


async def test_namespace_delete_aborts_its_ingests(meta: Metadata, ns: str) -> None:
    await clean(meta)
    with namespaces.use("gone"):
        w = await meta.content_store().writer("loose")
        await w.write(b"x")
        await w.close()
    await meta.namespaces.delete("gone")
    stats = await meta.garbage_collect()
    assert stats.ingests_aborted == 1
    assert await cs_backend(meta).list_statuses() == []


async def test_failed_prepare_leftover_is_swept(meta: Metadata, ns: str) -> None:
    await clean(meta)
    backend = sn_backend(meta)
    # The backend fails after creating the snapshot, and the clean-up removal fails too.
    backend.fail_prepare = backend.fail_remove = True
    with pytest.raises(InternalError):
        await meta.snapshotter("a").prepare("s")
    backend.fail_prepare = backend.fail_remove = False
    assert len(backend.snaps) == 1
    stats = await meta.garbage_collect()
    assert stats.snapshots_removed == {"a": 1}
    assert backend.snaps == {}


async def test_failed_sweep_stays_dirty(meta: Metadata, ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await clean(meta)
    d = await put(meta, b"blob")
    await meta.content_store().delete(d)

    async def boom(store: object) -> tuple[int, int]:
        raise OSError("disk trouble")

    with monkeypatch.context() as m:
        m.setattr(content_mod, "garbage_collect", boom)
        await meta.garbage_collect()
    assert d in await on_disk(meta)
    await meta.garbage_collect()
    assert d not in await on_disk(meta)


async def test_cancelled_sweep_stays_dirty(meta: Metadata, ns: str) -> None:
    await clean(meta)
    d = await put(meta, b"blob")
    await meta.content_store().delete(d)
    await meta.snapshotter("a").prepare("s")
    await meta.snapshotter("a").remove("s")
    cs = meta.content_store()
    async with cs.lock.shared():
        task = asyncio.create_task(meta.garbage_collect())
        await asyncio.sleep(0.05)  # blocked on the content store's exclusive lock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await meta.garbage_collect()
    assert d not in await on_disk(meta)
    assert sn_backend(meta).snaps == {}


async def test_removal_during_a_sweep_is_swept_by_the_next_collection(meta: Metadata, ns: str) -> None:
    await clean(meta)
    d = await put(meta, b"blob")
    await meta.content_store().delete(d)
    await meta.leases.create("l")
    with leasectx.use("l"):
        await meta.snapshotter("a").prepare("s")
    cs = meta.content_store()
    async with cs.lock.shared():
        task = asyncio.create_task(meta.garbage_collect())
        await asyncio.sleep(0.05)  # past the record sweep, waiting for the content store
        assert not task.done()
        await meta.snapshotter("a").remove("s")
    await task
    assert len(sn_backend(meta).snaps) == 1  # that collection had already taken the flags
    stats = await meta.garbage_collect()
    assert stats.snapshots_removed == {"a": 1}
    assert sn_backend(meta).snaps == {}


async def test_scheduler_collects_after_a_lease_delete(meta: Metadata, ns: str) -> None:
    s = Scheduler(meta.collector, SchedulerConfig(startup_delay="0ms", pause_threshold=0.5))
    meta.hooks.on_mutation(s.mutation)
    s.start()
    try:
        async with asyncio.timeout(10):
            while s.collections < 1:
                await asyncio.sleep(0.005)
            await meta.leases.create("l")
            with leasectx.use("l"):
                d = await put(meta, b"leased")
                await meta.snapshotter("b").prepare("s")
            await meta.leases.add_resource("l", Resource(d, "content"))
            await meta.leases.delete("l")
            while d in await on_disk(meta) or sn_backend(meta, "b").snaps:
                await asyncio.sleep(0.005)
        last = s.last_stats
        assert isinstance(last, Stats)
    finally:
        await s.close()


def test_gc_labels_keeps_only_gc_labels() -> None:
    assert gc_labels(None) == {}
    assert gc_labels('{"a": "1"}') == {}
    # the prefix in a value only: parsed, but nothing the collector uses
    assert gc_labels('{"note": "containerd.io/gc.root"}') == {}
    assert gc_labels('{"containerd.io/gc.root": "x", "other": "containerd.io/gc.ref.content"}') == {
        "containerd.io/gc.root": "x"
    }


async def test_only_gc_labels_make_roots_and_references(meta: Metadata, ns: str) -> None:
    await clean(meta)
    root = await put(meta, b"root", **{"containerd.io/gc.root": "1", "x": "containerd.io/gc.root"})
    child = await put(meta, b"child")
    parent = await put(
        meta, b"parent", **{"containerd.io/gc.ref.content.c": child, "containerd.io/gc.root": "y"}
    )
    lookalike = await put(meta, b"lookalike", **{"note": "containerd.io/gc.root"})
    await meta.content_store().delete(await put(meta, b"gone"))
    await meta.garbage_collect()
    assert await on_disk(meta) == {root, child, parent}
    assert lookalike not in await on_disk(meta)
