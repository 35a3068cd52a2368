"""Garbage collection: roots, references, expiry, flat leases, the sweep of records and backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from arun import leasectx, namespaces
from arun.content.local import LocalStore
from arun.core import typeurl
from arun.core.containers import Container, RuntimeInfo
from arun.core.content import Descriptor, digest_bytes
from arun.core.images import Image
from arun.core.leases import Resource
from arun.core.sandbox import Sandbox
from arun.core.snapshots import Info, Kind
from arun.errdefs import NotFoundError
from arun.metadata import gc
from arun.metadata.db import Database
from arun.metadata.meta import Metadata
from arun.testing.events import RecordingPublisher
from arun.testing.snapshotter import MemorySnapshotter
from tests.unit.metadata.blobs import put

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
FUTURE = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
PAST = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def meta(db: Database, tmp_path: Path, publisher: RecordingPublisher) -> AsyncIterator[Metadata]:
    m = Metadata(
        db,
        content=LocalStore(tmp_path / "content"),
        snapshotters={"fake": MemorySnapshotter()},
        publisher=publisher,
    )
    yield m


def backend_sn(meta: Metadata) -> MemorySnapshotter:
    b = meta.snapshotter("fake").backend
    assert isinstance(b, MemorySnapshotter)
    return b


async def present(meta: Metadata) -> set[str]:
    return {i.digest async for i in meta.content_store().walk()}


async def on_disk(meta: Metadata) -> set[str]:
    return {i.digest async for i in meta.content_store().backend.walk()}


async def snapshots(meta: Metadata) -> set[str]:
    return {i.name async for i in meta.snapshotter("fake").walk()}


async def committed_layer(meta: Metadata, name: str, parent: str = "") -> None:
    sn = meta.snapshotter("fake")
    await sn.prepare(f"extract-{name}", parent)
    await sn.commit(name, f"extract-{name}")


async def test_image_keeps_its_graph(meta: Metadata, ns: str, publisher: RecordingPublisher) -> None:
    layer = await put(meta, b"layer")
    config = await put(meta, b"config", **{"containerd.io/gc.ref.snapshot.fake": "chain2"})
    manifest = await put(
        meta,
        b"manifest",
        **{"containerd.io/gc.ref.content.config": config, "containerd.io/gc.ref.content.l.0": layer},
    )
    stray = await put(meta, b"stray")
    await committed_layer(meta, "chain1")
    await committed_layer(meta, "chain2", "chain1")
    await committed_layer(meta, "unrelated")
    await meta.images.create(Image("img", Descriptor(MANIFEST, manifest, 8)))

    stats = await meta.garbage_collect()
    assert await present(meta) == {layer, config, manifest}
    assert await on_disk(meta) == {layer, config, manifest}
    assert await snapshots(meta) == {"chain1", "chain2"}
    assert stats.removed == {"content": 1, "snapshots": 1}
    assert stats.blobs_removed == 1 and stats.snapshots_removed == {"fake": 1}
    assert stray not in await on_disk(meta)
    assert [k.rsplit("/", 1)[1] for k in backend_sn(meta).snaps] == ["chain1", "chain2"]
    assert publisher.topics()[-1] == "/snapshot/remove"

    await meta.images.delete("img")
    await meta.garbage_collect()
    assert await present(meta) == set()
    assert await on_disk(meta) == set()
    assert await snapshots(meta) == set()
    assert backend_sn(meta).snaps == {}


async def test_shared_blob_survives_while_another_namespace_has_it(meta: Metadata) -> None:
    with namespaces.use("one"):
        d = await put(meta, b"shared", **{"containerd.io/gc.root": "x"})
    with namespaces.use("two"):
        await put(meta, b"shared")  # recorded here too, unreferenced
        await meta.garbage_collect()
        with pytest.raises(NotFoundError):
            await meta.content_store().info(d)
    with namespaces.use("one"):
        assert await present(meta) == {d}
    assert await on_disk(meta) == {d}


async def test_lease_holds_content_until_deleted(meta: Metadata, ns: str) -> None:
    await meta.leases.create("l1")
    with leasectx.use("l1"):
        held = await put(meta, b"held", **{"containerd.io/gc.ref.content": digest_bytes(b"child")})
    child = await put(meta, b"child")
    loose = await put(meta, b"loose")
    await meta.garbage_collect()
    assert await present(meta) == {held, child}
    assert loose not in await on_disk(meta)
    await meta.leases.delete("l1")
    await meta.garbage_collect()
    assert await present(meta) == set() and await on_disk(meta) == set()


async def test_flat_lease_holds_only_what_it_lists(meta: Metadata, ns: str) -> None:
    child = await put(meta, b"child")
    parent = await put(meta, b"parent", **{"containerd.io/gc.ref.content": child})
    await meta.leases.create("flat", {"containerd.io/gc.flat": "true"})
    await meta.leases.add_resource("flat", Resource(parent, "content"))
    await meta.garbage_collect()
    assert await present(meta) == {parent}


async def test_expired_lease_and_image(meta: Metadata, ns: str) -> None:
    await meta.leases.create("old", {"containerd.io/gc.expire": PAST})
    await meta.leases.create("new", {"containerd.io/gc.expire": FUTURE})
    await meta.leases.create("bad", {"containerd.io/gc.expire": "not a time"})
    d1 = await put(meta, b"one")
    d2 = await put(meta, b"two")
    await meta.leases.add_resource("old", Resource(d1, "content"))
    await meta.leases.add_resource("new", Resource(d2, "content"))
    await meta.images.create(Image("expired", Descriptor(MANIFEST, d1, 3), {"containerd.io/gc.expire": PAST}))
    stats = await meta.garbage_collect()
    assert await present(meta) == {d2}
    assert {le.id for le in await meta.leases.list()} == {"new", "bad"}
    assert await meta.images.list() == []
    assert stats.removed == {"leases": 1, "images": 1, "content": 1}


async def test_container_and_sandbox_roots(meta: Metadata, ns: str) -> None:
    await committed_layer(meta, "base")
    sn = meta.snapshotter("fake")
    await sn.prepare("rootfs", "base")
    spec = typeurl.Any("spec", b"{}")
    await meta.containers.create(
        Container("c1", runtime=RuntimeInfo("r"), spec=spec, snapshotter="fake", snapshot_key="rootfs")
    )
    kept = await put(meta, b"sandbox-config")
    await meta.sandboxes.create(Sandbox("s1", labels={"containerd.io/gc.ref.content.cfg": kept}))
    await put(meta, b"other")
    await meta.garbage_collect()
    assert await snapshots(meta) == {"base", "rootfs"}
    assert await present(meta) == {kept}
    await meta.containers.delete("c1")
    await meta.garbage_collect()
    assert await snapshots(meta) == set()


async def test_root_labels_and_back_references(meta: Metadata, ns: str) -> None:
    root = await put(meta, b"root", **{"containerd.io/gc.root": "yes"})
    target = await put(meta, b"target", **{"containerd.io/gc.root": "yes"})
    follower = await put(meta, b"follower", **{"containerd.io/gc.bref.content": target})
    await committed_layer(meta, "snap")
    await meta.snapshotter("fake").update(
        Info("snap", Kind.UNKNOWN, labels={"containerd.io/gc.root": "1"}), ["labels.containerd.io/gc.root"]
    )
    await meta.garbage_collect()
    assert await present(meta) == {root, target, follower}
    assert await snapshots(meta) == {"snap"}


async def test_ingests(meta: Metadata, ns: str, tmp_path: Path) -> None:
    cs = meta.content_store()
    # an unleased ingest is kept until it expires
    w = await cs.writer("loose")
    await w.write(b"partial")
    await w.close()
    await meta.garbage_collect()
    assert [s.ref for s in await cs.list_statuses()] == ["loose"]
    async with meta.db.update() as tx:
        await tx.execute("UPDATE ingests SET expires_at = 1")
    await meta.garbage_collect()
    assert await cs.list_statuses() == []
    assert await cs.backend.list_statuses() == []

    # a leased ingest of a blob the backend already has keeps that blob alive
    with namespaces.use("other"):
        d = await put(meta, b"shared-blob")
    await meta.leases.create("pull")
    with leasectx.use("pull"):
        w = await cs.writer("in-flight", expected=d)
    with namespaces.use("other"):
        await cs.delete(d)
    await meta.garbage_collect()
    assert d in await on_disk(meta)
    await w.commit(0, d)
    assert (await cs.info(d)).size == len(b"shared-blob")


async def test_backend_orphans_are_reclaimed(meta: Metadata, ns: str) -> None:
    # What a crash leaves: a backend blob and ingest with no record, a backend snapshot with no key.
    backend = meta.content_store().backend
    w = await backend.writer("orphan-ingest")
    await w.write(b"x")
    await w.close()
    w = await backend.writer("orphan-blob")
    await w.write(b"blob")
    await w.commit(4)
    await backend_sn(meta).prepare("orphan", "")
    stats = await meta.garbage_collect()
    assert await backend.list_statuses() == []
    assert [i async for i in backend.walk()] == []
    assert backend_sn(meta).snaps == {}
    assert (stats.blobs_removed, stats.ingests_aborted, stats.snapshots_removed) == (1, 1, {"fake": 1})


async def test_gc_waits_for_an_ongoing_commit(meta: Metadata, ns: str) -> None:
    cs = meta.content_store()
    async with cs.lock.shared():
        task = asyncio.create_task(gc.Collector(meta.db, meta.hooks, meta._sweep_backends).collect())
        await asyncio.sleep(0.05)
        assert not task.done()  # the backend sweep waits for the commit in progress
    await task


def test_label_helpers() -> None:
    refs = gc.label_refs(
        "ns",
        {
            "containerd.io/gc.ref.content": "a",
            "containerd.io/gc.ref.content.l.0": "b",
            "containerd.io/gc.ref.content/x": "c",
            "containerd.io/gc.ref.contentX": "nope",
            "containerd.io/gc.ref.snapshot.overlayfs": "s1",
            "containerd.io/gc.ref.snapshot.native/1": "s2",
            "containerd.io/gc.ref.image": "img",
            "other": "z",
        },
    )
    assert sorted(refs) == sorted(
        [
            gc.Node(gc.Kind.CONTENT, "ns", "a"),
            gc.Node(gc.Kind.CONTENT, "ns", "b"),
            gc.Node(gc.Kind.CONTENT, "ns", "c"),
            gc.Node(gc.Kind.SNAPSHOT, "ns", "overlayfs/s1"),
            gc.Node(gc.Kind.SNAPSHOT, "ns", "native/s2"),
            gc.Node(gc.Kind.IMAGE, "ns", "img"),
        ]
    )
    now = datetime.now(UTC)
    assert gc.expired({"containerd.io/gc.expire": PAST}, now)
    assert not gc.expired({"containerd.io/gc.expire": FUTURE}, now)
    assert not gc.expired({"containerd.io/gc.expire": "garbage"}, now)
    assert not gc.expired({}, now)


def test_tricolor_strips_flat_bits() -> None:
    a = gc.Node(gc.Kind.CONTENT | gc.FLAT, "n", "a")
    b = gc.Node(gc.Kind.CONTENT, "n", "b")
    edges = {a: [b]}
    assert gc.tricolor([a], lambda n: edges.get(n, [])) == {a.unflat(), b}


def test_parse_duration() -> None:
    assert gc.parse_duration("0ms") == 0
    assert gc.parse_duration("100ms") == pytest.approx(0.1)
    assert gc.parse_duration("1m30s") == 90
    with pytest.raises(Exception, match="invalid duration"):
        gc.parse_duration("10 parsecs")


async def test_content_backend_cleanup_hook(db: Database, tmp_path: Path, ns: str) -> None:
    class CleaningStore(LocalStore):
        cleaned = 0

        async def cleanup(self) -> None:
            self.cleaned += 1

    backend = CleaningStore(tmp_path / "c2")
    meta = Metadata(db, content=backend)
    await meta.garbage_collect()
    assert backend.cleaned == 1
