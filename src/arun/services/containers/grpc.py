"""The Containers servicer: protobuf in, ``ContainersLocal`` calls, protobuf out."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from arun.api.containerd.services.containers.v1 import containers_grpc, containers_pb2
from arun.core.containers import Container, RuntimeInfo
from arun.errdefs import InvalidArgumentError
from arun.services import convert
from arun.services.containers.local import ContainersLocal


def to_pb(c: Container) -> containers_pb2.Container:
    return containers_pb2.Container(
        id=c.id,
        labels=c.labels,
        image=c.image,
        runtime=containers_pb2.Container.Runtime(
            name=c.runtime.name, options=convert.any_to_pb(c.runtime.options)
        ),
        spec=convert.any_to_pb(c.spec),
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        created_at=convert.timestamp(c.created_at),
        updated_at=convert.timestamp(c.updated_at),
        extensions=convert.anys_to_pb(c.extensions),
        sandbox=c.sandbox_id,
    )


def from_pb(c: containers_pb2.Container) -> Container:
    return Container(
        id=c.id,
        labels=dict(c.labels),
        image=c.image,
        runtime=RuntimeInfo(
            c.runtime.name, convert.any_from_pb(c.runtime.options) if c.runtime.HasField("options") else None
        ),
        spec=convert.any_from_pb(c.spec) if c.HasField("spec") else None,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        sandbox_id=c.sandbox,
        extensions={k: convert.any_from_pb(v) for k, v in c.extensions.items()},
    )


class ContainersServicer(containers_grpc.ContainersBase):
    def __init__(self, local: ContainersLocal) -> None:
        self.local = local

    async def Get(self, stream: Any) -> None:
        req = await stream.recv_message()
        c = await self.local.get(req.id)
        await stream.send_message(containers_pb2.GetContainerResponse(container=to_pb(c)))

    async def List(self, stream: Any) -> None:
        req = await stream.recv_message()
        found = await self.local.list(*req.filters)
        await stream.send_message(containers_pb2.ListContainersResponse(containers=[to_pb(c) for c in found]))

    async def ListStream(self, stream: Any) -> None:
        req = await stream.recv_message()
        for c in await self.local.list(*req.filters):
            await stream.send_message(containers_pb2.ListContainerMessage(container=to_pb(c)))

    async def Create(self, stream: Any) -> None:
        req = await stream.recv_message()
        c = await self.local.create(from_pb(req.container))
        await stream.send_message(containers_pb2.CreateContainerResponse(container=to_pb(c)))

    async def Update(self, stream: Any) -> None:
        req = await stream.recv_message()
        if not req.container.id:
            raise InvalidArgumentError("Container.ID required")
        c = await self.local.update(from_pb(req.container), *convert.field_paths(req))
        await stream.send_message(containers_pb2.UpdateContainerResponse(container=to_pb(c)))

    async def Delete(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.local.delete(req.id)
        await stream.send_message(empty_pb2.Empty())
