"""The containers service over the container store (which publishes the events)."""

from __future__ import annotations

from arun.core.containers import Container, ContainerStore


class ContainersLocal:
    """``core.containers.ContainerStore`` as a service: what the gRPC servicer and in-process
    users (CRI) call."""

    def __init__(self, store: ContainerStore) -> None:
        self.store = store

    async def get(self, id: str) -> Container:
        return await self.store.get(id)

    async def list(self, *filters: str) -> list[Container]:
        return await self.store.list(*filters)

    async def create(self, container: Container) -> Container:
        return await self.store.create(container)

    async def update(self, container: Container, *fieldpaths: str) -> Container:
        return await self.store.update(container, *fieldpaths)

    async def delete(self, id: str) -> None:
        await self.store.delete(id)
