"""Registrations of snapshots: ``io.containerd.service.v1.snapshots-service`` and
``io.containerd.grpc.v1.snapshots``."""

from __future__ import annotations

from arun.metadata.meta import Metadata
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services import SNAPSHOTS_SERVICE
from arun.services.snapshots.grpc import SnapshotsServicer
from arun.services.snapshots.local import SnapshotsLocal


@register(PluginType.SERVICE, SNAPSHOTS_SERVICE, requires=(PluginType.METADATA,))
async def init_local(ic: InitContext) -> SnapshotsLocal:
    meta: Metadata = ic.get_single(PluginType.METADATA)
    return SnapshotsLocal(meta.snapshotters)


@register(PluginType.GRPC, "snapshots", requires=(PluginType.SERVICE,))
async def init_grpc(ic: InitContext) -> Servicers:
    local: SnapshotsLocal = ic.get_by_id(PluginType.SERVICE, SNAPSHOTS_SERVICE)
    return Servicers(SnapshotsServicer(local))
