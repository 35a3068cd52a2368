"""Contract suite for ``arun.core.content.ContentStore`` implementations.

Each check is an async function taking a fresh, empty store. Tests
parametrize over ``CHECKS`` (every store) and, for stores that keep labels,
``LABEL_CHECKS``; a store without labels must pass ``check_update_immutable``
instead::

    @pytest.mark.parametrize("check", content.CHECKS.values(), ids=list(content.CHECKS))
    async def test_local(check, tmp_path):
        await check(LocalStore(tmp_path))

The checks follow containerd's ``content/testsuite`` in substance (writer,
resume, commit errors, refs in use), in arun's Python interface.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable

from arun.core.content import ContentStore, Descriptor, Info, Writer, digest_bytes
from arun.errdefs import (
    AlreadyExistsError,
    ArunError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)

__all__ = ["CHECKS", "LABEL_CHECKS", "check_update_immutable"]

Check = Callable[[ContentStore], Awaitable[None]]
CHECKS: dict[str, Check] = {}
LABEL_CHECKS: dict[str, Check] = {}


def _check(fn: Check) -> Check:
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


def _label_check(fn: Check) -> Check:
    LABEL_CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


def blob(size: int, seed: int = 0) -> tuple[bytes, str]:
    """Deterministic pseudo-random content of ``size`` bytes, and its digest."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    data = bytes(out[:size])
    return data, digest_bytes(data)


async def _expect(exc: type[ArunError], aw: Awaitable[object]) -> ArunError:
    try:
        await aw
    except exc as e:
        return e
    except ArunError as e:
        raise AssertionError(f"expected {exc.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {exc.__name__}, got success")


async def _read_all(store: ContentStore, dgst: str, size: int) -> bytes:
    ra = await store.reader_at(Descriptor("application/octet-stream", dgst, size))
    try:
        assert ra.size == size, (ra.size, size)
        out = bytearray()
        while len(out) < ra.size:
            chunk = await ra.read_at(len(out), 100_000)
            assert chunk, "short read before the end"
            out += chunk
        return bytes(out)
    finally:
        await ra.close()


async def _write_blob(store: ContentStore, ref: str, data: bytes, dgst: str) -> None:
    w = await store.writer(ref, total=len(data), expected=dgst)
    try:
        await w.write(data)
        await w.commit(len(data), dgst)
    finally:
        await w.close()


async def _refs(store: ContentStore) -> set[str]:
    return {s.ref for s in await store.list_statuses()}


async def _digests(store: ContentStore) -> set[str]:
    return {i.digest async for i in store.walk()}


async def _assert_ref_in_use(store: ContentStore, ref: str) -> None:
    await _expect(UnavailableError, store.writer(ref))


@_check
async def check_writer(store: ContentStore) -> None:
    data, dgst = blob(300_000, 1)
    w = await store.writer("w1", total=len(data))
    st = await w.status()
    assert (st.ref, st.offset, st.total) == ("w1", 0, len(data)), st
    assert "w1" in await _refs(store)
    for i in range(0, len(data), 70_000):
        assert await w.write(data[i : i + 70_000]) == len(data[i : i + 70_000])
    st = await w.status()
    assert st.offset == len(data)
    assert w.digest() == dgst
    assert (await store.status("w1")).offset == len(data)
    await w.commit(len(data), dgst)
    await w.close()  # closing after commit is harmless

    info = await store.info(dgst)
    assert (info.digest, info.size) == (dgst, len(data))
    assert info.created_at is not None
    assert await _read_all(store, dgst, len(data)) == data
    assert dgst in await _digests(store)
    assert "w1" not in await _refs(store)
    await _expect(NotFoundError, store.status("w1"))


@_check
async def check_read_at(store: ContentStore) -> None:
    data, dgst = blob(200_000, 2)
    await _write_blob(store, "r1", data, dgst)
    ra = await store.reader_at(Descriptor("application/octet-stream", dgst, len(data)))
    try:
        assert await ra.read_at(0, 10) == data[:10]
        assert await ra.read_at(150_000, 100_000) == data[150_000:]
        assert await ra.read_at(len(data) - 1, 5) == data[-1:]
        assert await ra.read_at(len(data), 5) == b""
        assert await ra.read_at(len(data) + 100, 5) == b""
        assert await ra.read_at(77, 0) == b""
    finally:
        await ra.close()


@_check
async def check_small_and_empty_blob(store: ContentStore) -> None:
    for ref, data in (("empty", b""), ("small", b"hello")):
        dgst = digest_bytes(data)
        w = await store.writer(ref)
        await w.write(data)
        await w.commit(0, dgst)  # size 0: not checked
        assert (await store.info(dgst)).size == len(data)
        assert await _read_all(store, dgst, len(data)) == data


@_check
async def check_commit_size_mismatch(store: ContentStore) -> None:
    data, dgst = blob(1000, 3)
    w = await store.writer("sz")
    await w.write(data)
    await _expect(FailedPreconditionError, w.commit(len(data) + 1, dgst))
    await w.close()
    await _expect(NotFoundError, store.info(dgst))
    assert dgst not in await _digests(store)
    # Nothing committed, but the ingest is kept for a resume.
    assert (await store.status("sz")).offset == len(data)
    w = await store.writer("sz")
    assert (await w.status()).offset == len(data)
    await w.commit(len(data), dgst)
    assert (await store.info(dgst)).size == len(data)


@_check
async def check_commit_digest_mismatch(store: ContentStore) -> None:
    data, dgst = blob(1000, 4)
    _, other = blob(1000, 5)
    w = await store.writer("dg")
    await w.write(data)
    await _expect(FailedPreconditionError, w.commit(len(data), other))
    await w.close()
    await _expect(NotFoundError, store.info(other))
    await _expect(NotFoundError, store.info(dgst))
    assert await _digests(store) == set()
    await store.abort("dg")
    await _expect(NotFoundError, store.status("dg"))


@_check
async def check_commit_exists(store: ContentStore) -> None:
    data, dgst = blob(5000, 6)
    await _write_blob(store, "first", data, dgst)
    w = await store.writer("second")
    await w.write(data)
    await _expect(AlreadyExistsError, w.commit(len(data), dgst))
    await w.close()
    # The duplicate ingest is gone and the blob unchanged.
    await _expect(NotFoundError, store.status("second"))
    assert await _read_all(store, dgst, len(data)) == data
    # A writer that names an existing digest is refused up front.
    await _expect(AlreadyExistsError, store.writer("third", expected=dgst))
    assert "third" not in await _refs(store)


@_check
async def check_ref_in_use(store: ContentStore) -> None:
    w = await store.writer("busy")
    try:
        await _assert_ref_in_use(store, "busy")
        other = await store.writer("free")  # other refs are not affected
        await other.close()
    finally:
        await w.close()
    w2 = await store.writer("busy")
    await w2.close()


@_check
async def check_resume(store: ContentStore) -> None:
    data, dgst = blob(3 * 65536 + 123, 7)
    half = len(data) // 2
    w = await store.writer("resume", total=len(data))
    await w.write(data[:half])
    await w.close()

    st = await store.status("resume")
    assert (st.offset, st.total) == (half, len(data)), st
    w = await store.writer("resume", total=len(data))
    st = await w.status()
    assert st.offset == half
    await w.write(data[half:])
    assert w.digest() == dgst
    await w.commit(len(data), dgst)
    assert await _read_all(store, dgst, len(data)) == data


@_check
async def check_resume_total_conflict(store: ContentStore) -> None:
    w = await store.writer("tot", total=100)
    await w.write(b"x" * 10)
    await w.close()
    await _expect(FailedPreconditionError, store.writer("tot", total=200))
    # The refusal released the ref.
    w = await store.writer("tot")
    assert (await w.status()).offset == 10
    await w.close()


@_check
async def check_truncate(store: ContentStore) -> None:
    data, dgst = blob(70_000, 8)
    w = await store.writer("trunc")
    await w.write(b"garbage" * 1000)
    await w.truncate(0)
    assert (await w.status()).offset == 0
    await w.write(data)
    await w.commit(len(data), dgst)
    assert await _read_all(store, dgst, len(data)) == data
    w = await store.writer("trunc2")
    try:
        await _expect(InvalidArgumentError, w.truncate(5))
    finally:
        await w.close()


@_check
async def check_abort(store: ContentStore) -> None:
    w = await store.writer("ab")
    await w.write(b"data")
    await w.close()
    assert "ab" in await _refs(store)
    await store.abort("ab")
    assert "ab" not in await _refs(store)
    await _expect(NotFoundError, store.status("ab"))
    await _expect(NotFoundError, store.abort("ab"))
    # A new writer on the ref starts from zero.
    w = await store.writer("ab")
    assert (await w.status()).offset == 0
    await w.close()


@_check
async def check_delete(store: ContentStore) -> None:
    data, dgst = blob(10, 9)
    await _write_blob(store, "del", data, dgst)
    await store.delete(dgst)
    await _expect(NotFoundError, store.info(dgst))
    await _expect(NotFoundError, store.delete(dgst))
    await _expect(NotFoundError, store.reader_at(Descriptor("x", dgst, len(data))))
    assert dgst not in await _digests(store)
    # It can be written again after deletion.
    await _write_blob(store, "del2", data, dgst)
    assert (await store.info(dgst)).size == 10


@_check
async def check_invalid_arguments(store: ContentStore) -> None:
    for bad in ("", "sha256:xyz", "sha256:" + "A" * 64, "md5:" + "0" * 32, "sha256" + "0" * 64, "../x"):
        await _expect(InvalidArgumentError, store.info(bad))
        await _expect(InvalidArgumentError, store.delete(bad))
        await _expect(InvalidArgumentError, store.reader_at(Descriptor("x", bad, 0)))
    await _expect(InvalidArgumentError, store.writer(""))
    await _expect(InvalidArgumentError, store.writer("ok", expected="sha256:nope"))
    assert await _refs(store) == set()


@_check
async def check_list_statuses(store: ContentStore) -> None:
    writers: list[Writer] = []
    try:
        for i in range(3):
            w = await store.writer(f"ls-{i}", total=100 + i)
            await w.write(b"a" * i)
            writers.append(w)
        sts = {s.ref: s for s in await store.list_statuses()}
        assert set(sts) == {"ls-0", "ls-1", "ls-2"}
        for i in range(3):
            assert (sts[f"ls-{i}"].offset, sts[f"ls-{i}"].total) == (i, 100 + i)
    finally:
        for w in writers:
            await w.close()


@_check
async def check_refs_with_odd_characters(store: ContentStore) -> None:
    # Refs are free-form (containerd uses e.g. "layer-sha256:…" or "ns/1/ref"); they never become paths.
    for ref in ("a/b/../c", "../../etc/passwd", "sp ace", "ü-ñí"):
        data, dgst = blob(64, len(ref))
        w = await store.writer(ref)
        await w.write(data)
        assert (await store.status(ref)).ref == ref
        await w.commit(len(data), dgst)
        await _expect(NotFoundError, store.status(ref))


@_check
async def check_commit_error_sequence(store: ContentStore) -> None:
    """containerd's CommitErrorState: a ref survives failed commits and can be reused after success."""
    c1, d1 = blob(256, 10)
    _, d2 = blob(256, 11)
    await _write_blob(store, "c1", c1, d1)
    ref = "c1-commiterror-state"

    w = await store.writer(ref)
    await w.write(c1)
    await _assert_ref_in_use(store, ref)
    await _expect(AlreadyExistsError, w.commit(len(c1), d1))

    w = await store.writer(ref)
    await _assert_ref_in_use(store, ref)
    await w.write(c1)
    await _expect(AlreadyExistsError, w.commit(len(c1), ""))
    await w.close()

    w = await store.writer(ref)
    await _assert_ref_in_use(store, ref)
    await w.write(c1 + b"more")
    await _expect(FailedPreconditionError, w.commit(len(c1) + 4, d2))
    await w.close()

    w = await store.writer(ref)
    await _assert_ref_in_use(store, ref)
    await _expect(FailedPreconditionError, w.commit(len(c1), ""))
    await w.close()

    w = await store.writer(ref)
    await _assert_ref_in_use(store, ref)
    await w.commit(len(c1) + 4, "")
    await w.close()
    assert (await store.info(digest_bytes(c1 + b"more"))).size == len(c1) + 4

    w = await store.writer(ref)
    await w.write(c1)
    await _assert_ref_in_use(store, ref)
    await _expect(AlreadyExistsError, w.commit(len(c1), d1))
    await w.close()

    w = await store.writer(ref)
    await w.close()


@_check
async def check_concurrent_writers(store: ContentStore) -> None:
    blobs = [blob(150_000 + i, 20 + i) for i in range(4)]

    async def put(i: int) -> None:
        data, dgst = blobs[i]
        w = await store.writer(f"cc-{i}")
        for off in range(0, len(data), 40_000):
            await w.write(data[off : off + 40_000])
            await asyncio.sleep(0)
        await w.commit(len(data), dgst)

    await asyncio.gather(*(put(i) for i in range(4)))
    assert {d for _, d in blobs} <= await _digests(store)


@_check
async def check_large_blob(store: ContentStore) -> None:
    data = os.urandom(8 << 20)
    dgst = digest_bytes(data)
    w = await store.writer("large", total=len(data))
    for off in range(0, len(data), 1 << 20):
        await w.write(data[off : off + (1 << 20)])
    await w.commit(len(data), dgst)
    assert await _read_all(store, dgst, len(data)) == data


async def check_update_immutable(store: ContentStore) -> None:
    """For stores that keep no labels: Update is FailedPrecondition (containerd's unlabelled local store)."""
    data, dgst = blob(10, 30)
    await _write_blob(store, "imm", data, dgst)
    info = await store.info(dgst)
    assert info.labels == {}
    info.labels = {"a": "b"}
    await _expect(FailedPreconditionError, store.update(info))


@_label_check
async def check_labels(store: ContentStore) -> None:
    data, dgst = blob(100, 31)
    w = await store.writer("lab")
    await w.write(data)
    await w.commit(len(data), dgst, labels={"k1": "v1", "k2": "v2"})
    info = await store.info(dgst)
    assert info.labels == {"k1": "v1", "k2": "v2"}

    info.labels = {"k2": "", "k3": "v3"}
    updated = await store.update(info, ["labels.k2", "labels.k3"])
    assert updated.labels == {"k1": "v1", "k3": "v3"}, updated.labels
    assert (await store.info(dgst)).labels == {"k1": "v1", "k3": "v3"}

    replaced = await store.update(Info(dgst, 0, info.created_at, info.updated_at, {"only": "x"}))
    assert replaced.labels == {"only": "x"}
    assert replaced.size == len(data)
    await _expect(InvalidArgumentError, store.update(replaced, ["size"]))
    await _expect(
        NotFoundError, store.update(Info(digest_bytes(b"none"), 0, info.created_at, info.updated_at, {}))
    )
