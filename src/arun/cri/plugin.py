"""Registration of the CRI gRPC services (``io.containerd.grpc.v1.cri``)."""

from __future__ import annotations

from arun.cri.service import RuntimeServicer
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers


@register(PluginType.GRPC, "cri")
async def init(ic: InitContext) -> Servicers:
    return Servicers(RuntimeServicer())
