"""The content service over the namespaced content store.

Adds what the API needs beyond ``core.content.ContentStore``: walks and ingest
listings with filters, and reads of a byte range in bounded chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from arun.core.content import Descriptor, Info, Status, Writer
from arun.errdefs import OutOfRangeError
from arun.metadata.content import SqlContentStore

READ_CHUNK = 1 << 20


class ContentLocal:
    def __init__(self, store: SqlContentStore) -> None:
        self.store = store

    async def info(self, digest: str) -> Info:
        return await self.store.info(digest)

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        return await self.store.update(info, fieldpaths)

    def walk(self, *filters: str) -> AsyncIterator[Info]:
        return self.store.walk(*filters)

    async def delete(self, digest: str) -> None:
        await self.store.delete(digest)

    async def read(self, digest: str, offset: int = 0, size: int = 0) -> AsyncIterator[tuple[int, bytes]]:
        """``(offset, data)`` chunks of ``size`` bytes from ``offset`` (all that is left if ``size`` <= 0)."""
        length = await self.store.size(digest)  # validates the digest; NotFound if not visible here
        offset = max(offset, 0)
        if offset > length:
            raise OutOfRangeError(f"read past object length {length} bytes")
        if size <= 0 or offset + size > length:
            size = length - offset
        # Visible in this namespace (the size above): straight to the blob, without the second
        # lookup ``store.reader_at`` would make.
        ra = await self.store.backend.reader_at(Descriptor("", digest, length))
        try:
            end = offset + size
            while offset < end:
                data = await ra.read_at(offset, min(READ_CHUNK, end - offset))
                if not data:
                    break
                yield offset, data
                offset += len(data)
        finally:
            await ra.close()

    async def status(self, ref: str) -> Status:
        return await self.store.status(ref)

    async def list_statuses(self, *filters: str) -> list[Status]:
        return await self.store.list_statuses(*filters)

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> Writer:
        return await self.store.writer(ref, total=total, expected=expected)

    async def abort(self, ref: str) -> None:
        await self.store.abort(ref)
