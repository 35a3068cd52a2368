"""The leases service over the lease manager; ``sync`` deletion waits for a garbage collection."""

from __future__ import annotations

import asyncio
import base64
import builtins
import os
import time
from collections.abc import Awaitable, Callable

from arun.core.leases import Lease, LeaseManager, Resource

Collect = Callable[[], Awaitable[object]]


def random_id() -> str:
    """containerd's ``leases.WithRandomID``: nanoseconds of now and 3 random bytes."""
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


class LeasesLocal:
    def __init__(self, manager: LeaseManager, collect: Collect | None = None) -> None:
        self.manager = manager
        self.collect = collect

    async def create(self, id: str = "", labels: dict[str, str] | None = None) -> Lease:
        return await self.manager.create(id or random_id(), labels)

    async def delete(self, id: str, *, sync: bool = False) -> None:
        await self.manager.delete(id)
        if sync and self.collect is not None:
            await asyncio.shield(self.collect())

    async def list(self, *filters: str) -> builtins.list[Lease]:
        return await self.manager.list(*filters)

    async def add_resource(self, lease: str, resource: Resource) -> None:
        await self.manager.add_resource(lease, resource)

    async def delete_resource(self, lease: str, resource: Resource) -> None:
        await self.manager.delete_resource(lease, resource)

    async def list_resources(self, lease: str) -> builtins.list[Resource]:
        return await self.manager.list_resources(lease)
