"""The images service over the image store, with the ``sync`` option of Delete:
wait for a garbage collection after the deletion, as ``ctr images rm --sync`` asks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from arun.core.images import Descriptor, Image, ImageStore

# Runs one garbage collection and waits for it (the GC scheduler's schedule_and_wait).
Collect = Callable[[], Awaitable[object]]


class ImagesLocal:
    def __init__(self, store: ImageStore, collect: Collect | None = None) -> None:
        self.store = store
        self.collect = collect

    async def get(self, name: str) -> Image:
        return await self.store.get(name)

    async def list(self, *filters: str) -> list[Image]:
        return await self.store.list(*filters)

    async def create(self, image: Image) -> Image:
        return await self.store.create(image)

    async def update(self, image: Image, *fieldpaths: str) -> Image:
        return await self.store.update(image, *fieldpaths)

    async def delete(self, name: str, *, sync: bool = False, target: Descriptor | None = None) -> None:
        await self.store.delete(name, target=target)
        if sync and self.collect is not None:
            # The deletion is done; a client that gives up waiting must not cancel the collection.
            await asyncio.shield(self.collect())
