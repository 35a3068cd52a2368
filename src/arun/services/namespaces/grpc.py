"""The Namespaces servicer over NamespacesLocal."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from arun.api.containerd.services.namespaces.v1 import namespace_grpc, namespace_pb2
from arun.services.namespaces.local import Namespace, NamespacesLocal


def to_pb(ns: Namespace) -> namespace_pb2.Namespace:
    return namespace_pb2.Namespace(name=ns.name, labels=dict(ns.labels))


class NamespacesServicer(namespace_grpc.NamespacesBase):
    def __init__(self, local: NamespacesLocal) -> None:
        self.local = local

    async def Get(self, stream: Any) -> None:
        req = await stream.recv_message()
        ns = await self.local.get(req.name)
        await stream.send_message(namespace_pb2.GetNamespaceResponse(namespace=to_pb(ns)))

    async def List(self, stream: Any) -> None:
        req = await stream.recv_message()
        found = await self.local.list([req.filter] if req.filter else [])
        await stream.send_message(namespace_pb2.ListNamespacesResponse(namespaces=[to_pb(n) for n in found]))

    async def Create(self, stream: Any) -> None:
        req = await stream.recv_message()
        ns = await self.local.create(req.namespace.name, dict(req.namespace.labels))
        await stream.send_message(namespace_pb2.CreateNamespaceResponse(namespace=to_pb(ns)))

    async def Update(self, stream: Any) -> None:
        req = await stream.recv_message()
        paths = list(req.update_mask.paths) if req.HasField("update_mask") else []
        ns = await self.local.update(req.namespace.name, dict(req.namespace.labels), paths)
        await stream.send_message(namespace_pb2.UpdateNamespaceResponse(namespace=to_pb(ns)))

    async def Delete(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.local.delete(req.name)
        await stream.send_message(empty_pb2.Empty())
