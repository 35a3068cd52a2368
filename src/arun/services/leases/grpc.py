"""The Leases servicer."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from arun.api.containerd.services.leases.v1 import leases_grpc, leases_pb2
from arun.core.leases import Lease, Resource
from arun.services import convert
from arun.services.leases.local import LeasesLocal


def to_pb(lease: Lease) -> leases_pb2.Lease:
    return leases_pb2.Lease(id=lease.id, labels=lease.labels, created_at=convert.timestamp(lease.created_at))


class LeasesServicer(leases_grpc.LeasesBase):
    def __init__(self, local: LeasesLocal) -> None:
        self.local = local

    async def Create(self, stream: Any) -> None:
        req = await stream.recv_message()
        lease = await self.local.create(req.id, dict(req.labels))
        await stream.send_message(leases_pb2.CreateResponse(lease=to_pb(lease)))

    async def Delete(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.local.delete(req.id, sync=req.sync)
        await stream.send_message(empty_pb2.Empty())

    async def List(self, stream: Any) -> None:
        req = await stream.recv_message()
        found = await self.local.list(*req.filters)
        await stream.send_message(leases_pb2.ListResponse(leases=[to_pb(x) for x in found]))

    async def AddResource(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.local.add_resource(req.id, Resource(req.resource.id, req.resource.type))
        await stream.send_message(empty_pb2.Empty())

    async def DeleteResource(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.local.delete_resource(req.id, Resource(req.resource.id, req.resource.type))
        await stream.send_message(empty_pb2.Empty())

    async def ListResources(self, stream: Any) -> None:
        req = await stream.recv_message()
        found = await self.local.list_resources(req.id)
        await stream.send_message(
            leases_pb2.ListResourcesResponse(
                resources=[leases_pb2.Resource(id=r.id, type=r.type) for r in found]
            )
        )
