"""The namespaced content store: the content contract suite, then namespaces,
sharing, leases, filters and events."""

from __future__ import annotations

from pathlib import Path

import pytest

from arun import leasectx, namespaces
from arun.content.local import LocalStore
from arun.core.content import Descriptor, Info, digest_bytes
from arun.core.leases import Resource
from arun.errdefs import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from arun.metadata.common import Hooks
from arun.metadata.content import SqlContentStore
from arun.metadata.db import Database
from arun.metadata.leases import SqlLeaseManager
from arun.testing.events import RecordingPublisher
from arun.testing.suites import content as suite


@pytest.fixture
def backend(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "content")


@pytest.fixture
def store(db: Database, backend: LocalStore, publisher: RecordingPublisher) -> SqlContentStore:
    return SqlContentStore(db, backend, Hooks(publisher))


ALL_CHECKS = {**suite.CHECKS, **suite.LABEL_CHECKS}
# With the shared policy a new writer for a digest the backend already holds starts
# at the blob's full size (containerd's behaviour: status-aware clients skip the
# upload); the suite's delete check writes without looking at the offset.
SHARED_CHECKS = {k: v for k, v in ALL_CHECKS.items() if k != "delete"}


@pytest.mark.parametrize("check", list(ALL_CHECKS.values()), ids=list(ALL_CHECKS))
async def test_contract_suite_isolated(
    check: suite.Check, db: Database, backend: LocalStore, ns: str
) -> None:
    await check(SqlContentStore(db, backend, shared=False))


@pytest.mark.parametrize("check", list(SHARED_CHECKS.values()), ids=list(SHARED_CHECKS))
async def test_contract_suite_shared(check: suite.Check, store: SqlContentStore, ns: str) -> None:
    await check(store)


async def test_shared_writer_starts_at_the_end(store: SqlContentStore, ns: str) -> None:
    data = b"deleted, then written again"
    dgst = await put(store, data)
    await store.delete(dgst)
    w = await store.writer("again", total=len(data), expected=dgst)
    assert (await w.status()).offset == len(data)
    await w.commit(len(data), dgst)
    assert (await store.info(dgst)).size == len(data)


async def put(store: SqlContentStore, data: bytes, ref: str = "ref", **labels: str) -> str:
    dgst = digest_bytes(data)
    w = await store.writer(ref, total=len(data), expected=dgst)
    await w.write(data)
    await w.commit(len(data), dgst, labels=labels)
    return dgst


async def digests(store: SqlContentStore, *fs: str) -> list[str]:
    return [i.digest async for i in store.walk(*fs)]


async def test_namespaces_and_sharing(store: SqlContentStore, backend: LocalStore) -> None:
    data = b"shared bytes"
    with namespaces.use("one"):
        dgst = await put(store, data, a="1")
        assert (await store.info(dgst)).labels == {"a": "1"}
        with pytest.raises(AlreadyExistsError):
            await store.writer("again", expected=dgst)
    with namespaces.use("two"):
        with pytest.raises(NotFoundError):
            await store.info(dgst)
        with pytest.raises(NotFoundError):
            await store.reader_at(Descriptor("", dgst, len(data)))
        assert await digests(store) == []
        # The backend has it: the writer reports everything written; commit records it here.
        w = await store.writer("ref", total=len(data), expected=dgst)
        st = await w.status()
        assert (st.offset, st.total, st.expected) == (len(data), len(data), dgst)
        await w.commit(len(data), dgst, labels={"b": "2"})
        assert (await store.info(dgst)).labels == {"b": "2"}
        ra = await store.reader_at(Descriptor("", dgst, len(data)))
        assert await ra.read_at(0, 100) == data
        await ra.close()
    with namespaces.use("one"):
        assert (await store.info(dgst)).labels == {"a": "1"}
        await store.delete(dgst)
        with pytest.raises(NotFoundError):
            await store.info(dgst)
    with namespaces.use("two"):
        assert (await store.info(dgst)).size == len(data)
    # Deleting the record never deletes the bytes: that is GC's job.
    assert (await backend.info(dgst)).size == len(data)


async def test_shared_writer_rewritten_by_client(store: SqlContentStore) -> None:
    data = b"0123456789"
    with namespaces.use("one"):
        dgst = await put(store, data)
    with namespaces.use("two"):
        # A client that ignores the reported offset and starts over from 0.
        w = await store.writer("ref", expected=dgst)
        await w.truncate(0)
        await w.write(data)
        assert w.digest() == dgst
        await w.commit(len(data), dgst)
        assert (await store.info(dgst)).size == len(data)


async def test_commit_mismatch_commits_nothing(store: SqlContentStore, backend: LocalStore, ns: str) -> None:
    data = b"some data"
    w = await store.writer("ref")
    await w.write(data)
    with pytest.raises(FailedPreconditionError):
        await w.commit(len(data), digest_bytes(b"other"))
    assert await digests(store) == []
    assert [b.digest async for b in backend.walk()] == []
    # The ingest is still there to resume or abort.
    assert (await store.status("ref")).offset == len(data)
    w = await store.writer("ref")
    with pytest.raises(FailedPreconditionError):
        await w.commit(len(data) + 1)
    assert await digests(store) == []
    await store.abort("ref")
    with pytest.raises(NotFoundError):
        await store.status("ref")
    assert await backend.list_statuses() == []


async def test_ingests_are_per_namespace(store: SqlContentStore, backend: LocalStore) -> None:
    with namespaces.use("one"):
        w1 = await store.writer("same-ref")
        await w1.write(b"one")
        await w1.close()
    with namespaces.use("two"):
        w2 = await store.writer("same-ref")
        await w2.write(b"two-two")
        await w2.close()
        assert [s.ref for s in await store.list_statuses()] == ["same-ref"]
        assert (await store.status("same-ref")).offset == 7
        await store.abort("same-ref")
        with pytest.raises(NotFoundError):
            await store.abort("same-ref")
    with namespaces.use("one"):
        assert (await store.status("same-ref")).offset == 3
        assert [s.ref for s in await store.list_statuses("ref==same-ref")] == ["same-ref"]
        assert await store.list_statuses("ref==other") == []
    assert len(await backend.list_statuses()) == 1


async def test_update_walk_filters_and_events(
    store: SqlContentStore, ns: str, publisher: RecordingPublisher
) -> None:
    d1 = await put(store, b"one", "r1", kind="layer")
    d2 = await put(store, b"two", "r2")
    assert await digests(store) == sorted([d1, d2])
    assert await digests(store, "labels.kind==layer") == [d1]
    assert await digests(store, f"digest=={d2}") == [d2]
    with pytest.raises(InvalidArgumentError):
        await digests(store, "labels.kind==")
    info = await store.update(Info(d2, 0, None, None, {"x": "1", "y": "2"}), ["labels.x"])  # type: ignore[arg-type]
    assert info.labels == {"x": "1"}
    info = await store.update(Info(d2, 0, None, None, {"z": "3"}), ["labels"])  # type: ignore[arg-type]
    assert info.labels == {"z": "3"} and info.size == 3
    info = await store.update(Info(d2, 0, None, None, {}), ["labels.z"])  # type: ignore[arg-type]
    assert info.labels == {}
    with pytest.raises(InvalidArgumentError):
        await store.update(Info(d2, 0, None, None, {}), ["size"])  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await store.update(Info("sha256:" + "0" * 64, 0, None, None, {}))  # type: ignore[arg-type]
    await store.delete(d1)
    assert publisher.topics() == ["/content/create", "/content/create", "/content/delete"]
    assert publisher.events[0].event.digest == d1  # type: ignore[attr-defined]
    assert publisher.events[0].event.size == 3  # type: ignore[attr-defined]


async def test_lease_attachment(db: Database, store: SqlContentStore, ns: str) -> None:
    lm = SqlLeaseManager(db)
    await lm.create("l1")
    with leasectx.use("l1"):
        w = await store.writer("ref")
        await w.write(b"x")
        assert await lm.list_resources("l1") == [Resource("ref", "ingests")]
        await w.commit(1)
        d = digest_bytes(b"x")
        assert await lm.list_resources("l1") == [Resource(d, "content")]
        await store.delete(d)
        assert await lm.list_resources("l1") == []
    with leasectx.use("missing"), pytest.raises(NotFoundError):
        await store.writer("ref2")
    assert await store.list_statuses() == []


async def test_existing_blob_joins_the_lease(db: Database, store: SqlContentStore, ns: str) -> None:
    lm = SqlLeaseManager(db)
    d = await put(store, b"blob")
    await lm.create("l1")
    with leasectx.use("l1"), pytest.raises(AlreadyExistsError):
        await store.writer("ref", expected=d)
    assert await lm.list_resources("l1") == [Resource(d, "content")]


async def test_isolated_policy(db: Database, backend: LocalStore) -> None:
    store = SqlContentStore(db, backend, shared=False)
    with namespaces.use("one"):
        d = await put(store, b"abc")
    with namespaces.use("two"):
        w = await store.writer("r", expected=d)
        assert (await w.status()).offset == 0  # must send the bytes
        await w.write(b"abc")
        await w.commit(3, d)
        assert (await store.info(d)).size == 3


async def record(store: SqlContentStore, dgst: str, size: int, **labels: str) -> None:
    """Record a blob the backend already holds in the current namespace."""
    w = await store.writer("again", total=size, expected=dgst)
    await w.commit(size, dgst, labels=labels)


async def test_info_is_never_stale_nor_shared(store: SqlContentStore) -> None:
    """Every change shows in ``info``, in its namespace only, and a caller changing what it
    got changes nothing for the next (the row it is made from may be a cached one)."""
    data = b"memo bytes"
    with namespaces.use("one"):
        dgst = await put(store, data, a="1")
        first = await store.info(dgst)
        first.labels["mine"] = "x"
        first.size = 0
        again = await store.info(dgst)
        assert (again.size, again.labels) == (len(data), {"a": "1"})
        assert again is not first and again.labels is not first.labels
        assert await store.size(dgst) == len(data)
        await store.update(Info(dgst, 0, first.created_at, first.updated_at, {"a": "2"}), ["labels.a"])
        updated = await store.info(dgst)
        assert updated.labels == {"a": "2"} and updated.updated_at >= again.updated_at
    with namespaces.use("two"):
        with pytest.raises(NotFoundError):
            await store.info(dgst)
        with pytest.raises(NotFoundError):
            await store.size(dgst)
        await record(store, dgst, len(data), b="3")
        assert (await store.info(dgst)).labels == {"b": "3"}
    with namespaces.use("one"):
        assert (await store.info(dgst)).labels == {"a": "2"}
        await store.delete(dgst)
        with pytest.raises(NotFoundError):
            await store.info(dgst)
        with pytest.raises(NotFoundError):
            await store.size(dgst)
        with pytest.raises(InvalidArgumentError):
            await store.size("sha256:XYZ")
        await record(store, dgst, len(data), c="4")  # recorded again: new labels, not the ones seen before
        assert (await store.info(dgst)).labels == {"c": "4"}
    with namespaces.use("two"):
        assert (await store.info(dgst)).labels == {"b": "3"}
