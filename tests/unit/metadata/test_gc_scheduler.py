"""The GC scheduler: when collections run (no timing assertions, only order and counts)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from arun.metadata.gc import Scheduler, SchedulerConfig, Stats


class CountingCollector:
    def __init__(self) -> None:
        self.runs = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def collect(self) -> Stats:
        if self.gate is not None:
            await self.gate.wait()
        self.runs += 1
        if self.fail:
            raise RuntimeError("boom")
        return Stats(removed={"content": self.runs})


async def wait_for(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not cond():
            await asyncio.sleep(0.001)


@pytest.fixture
async def collector() -> CountingCollector:
    return CountingCollector()


def scheduler(c: CountingCollector, **kw: object) -> Scheduler:
    kw.setdefault("startup_delay", "0ms")
    cfg = SchedulerConfig(**kw)  # type: ignore[arg-type]
    return Scheduler(c, cfg)  # type: ignore[arg-type]


async def test_startup_collection_and_sync(collector: CountingCollector) -> None:
    s = scheduler(collector)
    s.start()
    try:
        await wait_for(lambda: collector.runs == 1)
        stats = await s.schedule_and_wait()
        assert collector.runs == 2 and stats.removed == {"content": 2}
    finally:
        await s.close()


async def test_deletion_schedules_but_plain_mutation_does_not(collector: CountingCollector) -> None:
    s = scheduler(collector, startup_delay="1h")
    s.start()
    try:
        for _ in range(5):
            s.mutation(False)
        await asyncio.sleep(0.05)
        assert collector.runs == 0
        s.mutation(True)
        await wait_for(lambda: collector.runs == 1)
    finally:
        await s.close()


async def test_deletions_are_debounced(collector: CountingCollector) -> None:
    s = scheduler(collector, startup_delay="1h", schedule_delay="50ms")
    s.start()
    try:
        for _ in range(20):
            s.mutation(True)
        await wait_for(lambda: collector.runs >= 1)
        await asyncio.sleep(0.1)
        assert collector.runs == 1
    finally:
        await s.close()


async def test_mutation_threshold(collector: CountingCollector) -> None:
    s = scheduler(collector, startup_delay="1h", mutation_threshold=3)
    s.start()
    try:
        s.mutation(False)
        s.mutation(False)
        await asyncio.sleep(0.05)
        assert collector.runs == 0
        s.mutation(False)
        await wait_for(lambda: collector.runs == 1)
    finally:
        await s.close()


async def test_deletion_during_collection_runs_again(collector: CountingCollector) -> None:
    s = scheduler(collector, startup_delay="1h", pause_threshold=0.5)
    collector.gate = asyncio.Event()
    s.start()
    try:
        s.mutation(True)
        await asyncio.sleep(0.02)
        s.mutation(True)  # arrives while the first collection is blocked
        collector.gate.set()
        await wait_for(lambda: collector.runs == 2)
    finally:
        await s.close()


async def test_failure_is_reported_to_waiters(collector: CountingCollector) -> None:
    s = scheduler(collector, startup_delay="1h")
    s.start()
    try:
        collector.fail = True
        with pytest.raises(RuntimeError, match="boom"):
            await s.schedule_and_wait()
        collector.fail = False
        assert (await s.schedule_and_wait()).removed
    finally:
        await s.close()


async def test_without_task_collects_inline(collector: CountingCollector) -> None:
    s = scheduler(collector)
    await s.schedule_and_wait()
    assert collector.runs == 1
    s.mutation(True)  # not started: nothing scheduled, nothing raised
    await s.close()


async def test_after_the_first_collection_deletions_wait_for_the_next_tick(
    collector: CountingCollector,
) -> None:
    # A tiny pause threshold: ticks ~50 s apart.
    s = scheduler(collector, pause_threshold=0.0001)
    s.start()
    try:
        await wait_for(lambda: collector.runs == 1)
        s._earliest = 0.0  # the pause threshold alone would allow a collection now
        s.mutation(True)
        await asyncio.sleep(0.05)
        assert collector.runs == 1  # not right after the deletion
        # an explicit request still runs at once, and takes the pending deletion with it
        await s.schedule_and_wait()
        assert collector.runs == 2
        assert not s._due()
    finally:
        await s.close()


async def test_ticks_collect_only_when_something_was_deleted(collector: CountingCollector) -> None:
    # pause_threshold 0.5: a tick every few milliseconds.
    s = scheduler(collector, pause_threshold=0.5)
    s.start()
    try:
        await wait_for(lambda: collector.runs == 1)
        for _ in range(5):
            s.mutation(False)
        await asyncio.sleep(0.1)  # many ticks, nothing deleted
        assert collector.runs == 1
        s.mutation(True)
        await wait_for(lambda: collector.runs == 2)
        await asyncio.sleep(0.05)
        assert collector.runs == 2
    finally:
        await s.close()


async def test_mutation_threshold_is_checked_at_ticks(collector: CountingCollector) -> None:
    s = scheduler(collector, pause_threshold=0.5, mutation_threshold=3)
    s.start()
    try:
        await wait_for(lambda: collector.runs == 1)
        s.mutation(False)
        s.mutation(False)
        await asyncio.sleep(0.05)
        assert collector.runs == 1
        s.mutation(False)
        await wait_for(lambda: collector.runs == 2)
    finally:
        await s.close()


async def test_deletion_threshold_collects_at_once(collector: CountingCollector) -> None:
    s = scheduler(collector, pause_threshold=0.0001, deletion_threshold=2)
    s.start()
    try:
        await wait_for(lambda: collector.runs == 1)
        s.mutation(True)
        await asyncio.sleep(0.05)
        assert collector.runs == 1
        s.mutation(True)
        await wait_for(lambda: collector.runs == 2)
    finally:
        await s.close()
