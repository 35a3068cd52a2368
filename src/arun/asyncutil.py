"""Small asyncio helpers shared by every layer (no arun imports)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["readable", "to_thread_complete", "to_thread_interruptible"]

P = ParamSpec("P")
T = TypeVar("T")


async def to_thread_complete(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``asyncio.to_thread`` that, when cancelled, still waits for the thread to finish.

    Plain ``to_thread`` returns at once on cancellation while the thread keeps
    running; for work whose completion matters to what the caller does next
    (a mount, an extraction into a directory that cleanup will remove) the
    caller must not move on before the thread is done. Cancellation is
    re-raised afterwards; the thread's own result or error is then dropped.
    """
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait({fut})
        raise


async def to_thread_interruptible(fn: Callable[[], T], interrupt: Callable[[], None]) -> T:
    """Run ``fn`` in a thread; on cancellation call ``interrupt`` (from the loop), then wait for ``fn``.

    For long work that polls a flag (``interrupt`` sets it) and must have
    stopped before the caller cleans up after it.
    """
    fut = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        interrupt()
        with contextlib.suppress(BaseException):
            await asyncio.wait({fut})
        raise


async def readable(fd: int) -> None:
    """Wait until ``fd`` is readable (or at end-of-file, or in error) on the running loop."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
