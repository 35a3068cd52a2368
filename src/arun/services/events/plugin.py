"""Registration of the events gRPC service (``io.containerd.grpc.v1.events``)."""

from __future__ import annotations

from arun.events.exchange import Exchange
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services.events.grpc import EventsServicer


@register(PluginType.GRPC, "events", requires=(PluginType.EVENT,))
async def init_grpc(ic: InitContext) -> Servicers:
    exchange: Exchange = ic.get_single(PluginType.EVENT)
    return Servicers(EventsServicer(exchange))
