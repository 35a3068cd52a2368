from __future__ import annotations

import asyncio

from arun.transfer.progress import Phase, Progress, ProgressQueue, Tracker


async def test_queue_coalesces_byte_progress() -> None:
    q = ProgressQueue()
    for off in range(0, 100, 10):
        q(Progress("r", Phase.DOWNLOADING, "d1", offset=off, total=100))
    q(Progress("r", Phase.DOWNLOADED, "d1", offset=100, total=100))
    q.close()
    got = [(e.phase, e.offset) async for e in q]
    # The consumer was behind: it sees the latest offset, then the completion.
    assert got == [(Phase.DOWNLOADING, 90), (Phase.DOWNLOADED, 100)]


async def test_queue_without_coalescing_and_concurrent_consumer() -> None:
    q = ProgressQueue(coalesce=False)
    seen: list[int] = []

    async def consume() -> None:
        async for e in q:
            seen.append(e.offset)

    t = asyncio.create_task(consume())
    for off in (1, 2, 3):
        q(Progress("r", Phase.DOWNLOADING, "d", offset=off))
        await asyncio.sleep(0)
    q.close()
    await t
    assert seen == [1, 2, 3]


def test_tracker() -> None:
    t = Tracker()
    t(Progress("r", Phase.RESOLVING))
    t(Progress("r", Phase.DOWNLOADING, "a", offset=0, total=10))
    t(Progress("r", Phase.DOWNLOADING, "a", offset=6, total=10))
    t(Progress("r", Phase.DOWNLOADED, "a", offset=10, total=10))
    t(Progress("r", Phase.EXISTS, "b", total=5))
    assert t.downloaded_bytes == 10
    assert t.blobs["a"].phase == Phase.DOWNLOADED
    assert t.phases(Phase.EXISTS) == ["b"]
