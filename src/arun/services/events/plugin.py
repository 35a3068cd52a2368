"""Registration of the events service (``io.containerd.grpc.v1.events``): the gRPC service on
the daemon's socket, and ``Forward`` on its ttrpc socket for shims — one plugin, as in containerd."""

from __future__ import annotations

from arun.events.exchange import Exchange
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.plugin.ttrpc import TTRPCRegistrar
from arun.services.events.grpc import EventsServicer
from arun.services.events.ttrpc import EventsTTRPC


class EventsService(Servicers):
    """The plugin instance: gRPC servicers (``register``) and the ttrpc handler
    (``register_ttrpc``)."""

    def __init__(self, exchange: Exchange) -> None:
        super().__init__(EventsServicer(exchange))
        self.ttrpc = EventsTTRPC(exchange)

    def register_ttrpc(self, server: TTRPCRegistrar, /) -> None:
        self.ttrpc.register_ttrpc(server)


@register(PluginType.GRPC, "events", requires=(PluginType.EVENT,))
async def init_grpc(ic: InitContext) -> EventsService:
    exchange: Exchange = ic.get_single(PluginType.EVENT)
    return EventsService(exchange)
