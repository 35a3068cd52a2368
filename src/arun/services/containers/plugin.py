"""Registrations of containers: the local service (``io.containerd.service.v1.containers-service``)
and its gRPC servicer (``io.containerd.grpc.v1.containers``)."""

from __future__ import annotations

from arun.metadata.meta import Metadata
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services import CONTAINERS_SERVICE
from arun.services.containers.grpc import ContainersServicer
from arun.services.containers.local import ContainersLocal


@register(PluginType.SERVICE, CONTAINERS_SERVICE, requires=(PluginType.METADATA,))
async def init_local(ic: InitContext) -> ContainersLocal:
    meta: Metadata = ic.get_single(PluginType.METADATA)
    return ContainersLocal(meta.containers)


@register(PluginType.GRPC, "containers", requires=(PluginType.SERVICE,))
async def init_grpc(ic: InitContext) -> Servicers:
    local: ContainersLocal = ic.get_by_id(PluginType.SERVICE, CONTAINERS_SERVICE)
    return Servicers(ContainersServicer(local))
