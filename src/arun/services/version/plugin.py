"""Registration of the Version service (``io.containerd.grpc.v1.version``)."""

from __future__ import annotations

from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services.version.grpc import VersionServicer


@register(PluginType.GRPC, "version")
async def init(ic: InitContext) -> Servicers:
    return Servicers(VersionServicer())
