from __future__ import annotations

import asyncio

import pytest

from arun.metadata.rwlock import RWLock


async def test_readers_share_writer_excludes() -> None:
    lock = RWLock()
    order: list[str] = []
    async with lock.shared(), lock.shared():
        assert lock.readers == 2

        async def writer() -> None:
            async with lock.exclusive():
                order.append("w")

        t = asyncio.create_task(writer())
        await asyncio.sleep(0.01)
        assert order == [] and not lock.locked_exclusive

        async def late_reader() -> None:
            async with lock.shared():
                order.append("r")

        r = asyncio.create_task(late_reader())
        await asyncio.sleep(0.01)
        assert order == []  # a waiting writer holds back new readers
    await asyncio.gather(t, r)
    assert order == ["w", "r"]
    assert lock.readers == 0 and not lock.locked_exclusive


async def test_cancelled_waiter_does_not_leak() -> None:
    lock = RWLock()
    async with lock.exclusive():
        t = asyncio.create_task(lock.shared().__aenter__())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
    async with lock.exclusive():
        assert lock.readers == 0


async def test_release_on_error() -> None:
    lock = RWLock()
    with pytest.raises(RuntimeError):
        async with lock.shared():
            raise RuntimeError
    with pytest.raises(RuntimeError):
        async with lock.exclusive():
            raise RuntimeError
    async with lock.exclusive():
        pass
