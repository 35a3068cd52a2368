"""The local content store: the contract suite, plus layout and crash-safety details."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from arun.content.local import LocalStore, MemoryLabelStore
from arun.content.local.writer import format_timestamp, parse_timestamp
from arun.core.content import digest_bytes, digest_string
from arun.errdefs import AlreadyExistsError, FailedPreconditionError, NotFoundError
from arun.testing.suites import content as suite


@pytest.mark.parametrize("check", list(suite.CHECKS.values()), ids=list(suite.CHECKS))
async def test_suite(check: suite.Check, tmp_path: Path) -> None:
    await check(LocalStore(tmp_path / "content"))


@pytest.mark.parametrize("check", list(suite.LABEL_CHECKS.values()), ids=list(suite.LABEL_CHECKS))
async def test_suite_labelled(check: suite.Check, tmp_path: Path) -> None:
    await check(LocalStore(tmp_path / "content", MemoryLabelStore()))


async def test_update_without_labels_is_refused(tmp_path: Path) -> None:
    await suite.check_update_immutable(LocalStore(tmp_path))


async def test_layout_is_containerds(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = b"layout"
    dgst = digest_bytes(data)
    w = await store.writer("my-ref", total=len(data))
    await w.write(data)
    ingest = tmp_path / "ingest" / digest_string("my-ref").split(":")[1]
    assert (ingest / "ref").read_text() == "my-ref"
    assert (ingest / "total").read_text() == str(len(data))
    parse_timestamp((ingest / "startedat").read_text())
    await w.commit(len(data), dgst)
    blob = tmp_path / "blobs" / "sha256" / dgst.split(":")[1]
    assert blob.read_bytes() == data
    assert blob.stat().st_mode & 0o222 == 0, "committed blobs are read-only"
    assert not ingest.exists()


def test_timestamps_round_trip() -> None:
    ns = 1_700_000_000_123_456_789
    text = format_timestamp(ns)
    assert text == "2023-11-14T22:13:20.123456789Z"
    assert parse_timestamp(text).timestamp() == pytest.approx(ns / 1e9, abs=1e-6)
    assert format_timestamp(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    # Go writes local offsets too.
    assert parse_timestamp("2023-11-14T23:13:20.5+01:00").timestamp() == pytest.approx(1_700_000_000.5)


async def test_reopen_resumes_ingest(tmp_path: Path) -> None:
    """A new store instance (a daemon restart) resumes an ingest left by the previous one."""
    data = os.urandom(200_000)
    w = await LocalStore(tmp_path).writer("restart", total=len(data))
    await w.write(data[:123_456])
    await w.close()
    store = LocalStore(tmp_path)
    st = await store.status("restart")
    assert (st.offset, st.total) == (123_456, len(data))
    w = await store.writer("restart")
    await w.write(data[123_456:])
    await w.commit(len(data), digest_bytes(data))


async def test_crash_before_rename_leaves_resumable_ingest(tmp_path: Path) -> None:
    """Data written but never closed (the process died): the ingest is still usable."""
    store = LocalStore(tmp_path)
    w = await store.writer("crash")
    await w.write(b"abc")
    # Simulate a crash: the lock dies with the process, the writer is never closed.
    from arun.content.local import writer as writer_mod

    writer_mod.unlock(w._path)
    store2 = LocalStore(tmp_path)
    w2 = await store2.writer("crash")
    assert (await w2.status()).offset == 3
    await w2.write(b"def")
    await w2.commit(6, digest_bytes(b"abcdef"))
    await w.close()


async def test_incomplete_ingest_is_restarted(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ingest = tmp_path / "ingest" / digest_string("half").split(":")[1]
    ingest.mkdir(parents=True)
    (ingest / "data").write_bytes(b"junk")  # no ref/timestamps: a crash while creating it
    w = await store.writer("half")
    assert (await w.status()).offset == 0
    await w.write(b"good")
    await w.commit(4, digest_bytes(b"good"))


async def test_commit_race_second_committer_gets_already_exists(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = b"same" * 1000
    ws = [await store.writer(f"race-{i}") for i in range(2)]
    for w in ws:
        await w.write(data)
    results = await asyncio.gather(*(w.commit(len(data)) for w in ws), return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert sum(isinstance(r, AlreadyExistsError) for r in results) == 1
    assert await store.list_statuses() == []


async def test_walk_skips_unknown_algorithms(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "blobs" / "md5").mkdir(parents=True)
    (tmp_path / "blobs" / "md5" / "abc").write_bytes(b"x")
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    (tmp_path / "blobs" / "sha256" / "not-a-digest").write_bytes(b"x")
    assert [i async for i in store.walk()] == []


async def test_large_writes_leave_the_loop(tmp_path: Path) -> None:
    """While a large chunk is hashed and written, other tasks run (the work is off the loop)."""
    store = LocalStore(tmp_path)
    chunk = os.urandom(32 << 20)
    w = await store.writer("loop")
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = ticks
    await w.write(chunk)
    during = ticks - start
    done = True
    await t
    await w.commit(len(chunk))
    # Inline hashing would have kept the ticker from running until write() returned.
    assert during > 1


async def test_status_of_unknown_ref(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(NotFoundError):
        await store.status("nope")


async def test_closed_writer_refuses_writes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    w = await store.writer("closed")
    await w.close()
    with pytest.raises(FailedPreconditionError):
        await w.write(b"x")


async def test_cleanup_removes_only_unlisted_unlocked_leftovers(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    # A crash while creating an ingest: a directory with data but no ref.
    orphan = tmp_path / "ingest" / digest_string("orphan").split(":")[1]
    orphan.mkdir(parents=True)
    (orphan / "data").write_bytes(b"junk")
    # A complete ingest (listed, so GC decides about it) and one held open by a writer.
    listed = await store.writer("listed")
    await listed.write(b"abc")
    await listed.close()
    held = await store.writer("held")
    assert await store.cleanup() == 1
    assert not orphan.exists()
    assert sorted(s.ref for s in await store.list_statuses()) == ["held", "listed"]
    await held.close()
    assert await store.cleanup() == 0
