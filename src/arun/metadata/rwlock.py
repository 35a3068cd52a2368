"""A readers-writer lock for asyncio.

Store operations that create backend objects before recording them (a
snapshot prepared, a blob committed) hold it shared; the garbage collector's
backend sweep holds it exclusively, so it never removes an object whose
record is about to be written. Waiters are served in arrival order, so a
waiting collector blocks later readers and cannot starve. Releasing never
awaits, so it is safe in ``finally`` blocks of cancelled tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class RWLock:
    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._waiters: deque[tuple[bool, asyncio.Future[None]]] = deque()

    @property
    def readers(self) -> int:
        return self._readers

    @property
    def locked_exclusive(self) -> bool:
        return self._writer

    def _wake(self) -> None:
        while self._waiters:
            exclusive, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if exclusive:
                if self._writer or self._readers:
                    return
                self._waiters.popleft()
                self._writer = True
                fut.set_result(None)
                return
            if self._writer:
                return
            self._waiters.popleft()
            self._readers += 1
            fut.set_result(None)

    async def _wait(self, exclusive: bool) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (exclusive, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted just as we were cancelled: give it back.
                self._release(exclusive)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._wake()
            raise

    def _release(self, exclusive: bool) -> None:
        if exclusive:
            self._writer = False
        else:
            self._readers -= 1
        self._wake()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        if not self._writer and not self._waiters:
            self._readers += 1
        else:
            await self._wait(False)
        try:
            yield
        finally:
            self._release(False)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        if not self._writer and not self._readers and not self._waiters:
            self._writer = True
        else:
            await self._wait(True)
        try:
            yield
        finally:
            self._release(True)
