from __future__ import annotations

import asyncio
import time

from arun import deadline


async def test_set_for_task_lasts_until_the_task_ends_and_never_extends_an_outer_one() -> None:
    async def request(seconds: float | None) -> tuple[float | None, float | None]:
        got = deadline.set_for_task(seconds)
        await asyncio.sleep(0)
        return got, deadline.remaining()

    assert deadline.current() is None
    got, remaining = await asyncio.create_task(request(30))
    assert got is not None and 29 < got - time.monotonic() <= 30
    assert remaining is not None and 0 < remaining <= 30
    assert deadline.current() is None  # the task's context went with it
    assert await asyncio.create_task(request(None)) == (None, None)

    with deadline.use(5) as outer:
        assert outer is not None
        got, _ = await asyncio.create_task(request(60))
        assert got == outer  # a longer timeout does not extend the outer deadline
        got, _ = await asyncio.create_task(request(None))
        assert got == outer
        got, _ = await asyncio.create_task(request(1))
        assert got is not None and got < outer
