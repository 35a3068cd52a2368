"""Registrations of leases: ``io.containerd.service.v1.leases-service`` and
``io.containerd.grpc.v1.leases``."""

from __future__ import annotations

from arun.metadata.gc import Scheduler
from arun.metadata.meta import Metadata
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services import LEASES_SERVICE
from arun.services.leases.grpc import LeasesServicer
from arun.services.leases.local import LeasesLocal


@register(PluginType.SERVICE, LEASES_SERVICE, requires=(PluginType.METADATA, PluginType.GC))
async def init_local(ic: InitContext) -> LeasesLocal:
    meta: Metadata = ic.get_single(PluginType.METADATA)
    gc: Scheduler = ic.get_single(PluginType.GC)
    return LeasesLocal(meta.leases, gc.schedule_and_wait)


@register(PluginType.GRPC, "leases", requires=(PluginType.SERVICE,))
async def init_grpc(ic: InitContext) -> Servicers:
    local: LeasesLocal = ic.get_by_id(PluginType.SERVICE, LEASES_SERVICE)
    return Servicers(LeasesServicer(local))
