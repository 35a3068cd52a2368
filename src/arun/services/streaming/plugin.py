"""Registration of the Streaming service (``io.containerd.grpc.v1.streaming``)."""

from __future__ import annotations

from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services.streaming.grpc import StreamingServicer
from arun.streaming.manager import StreamManager


@register(PluginType.GRPC, "streaming", requires=(PluginType.STREAMING,))
async def init(ic: InitContext) -> Servicers:
    manager: StreamManager = ic.get_by_id(PluginType.STREAMING, "manager")
    return Servicers(StreamingServicer(manager))
