"""The events service on the daemon's ttrpc socket (``containerd.services.events.ttrpc.v1.Events``).

Shims forward their task events here: ``Forward`` with an envelope they built (its
namespace, topic and timestamp are theirs), put on the exchange as it is, as
containerd's ``plugins/services/events/ttrpc.go`` does. The service has no other method.
"""

from __future__ import annotations

from google.protobuf import empty_pb2

from arun.api.containerd.services.ttrpc.events.v1 import events_pb2
from arun.events.exchange import Exchange
from arun.plugin.ttrpc import TTRPCRegistrar
from arun.services.events.grpc import envelope_from_pb

SERVICE = "containerd.services.events.ttrpc.v1.Events"


class EventsTTRPC:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    async def Forward(self, request: events_pb2.ForwardRequest) -> empty_pb2.Empty:
        await self.exchange.forward(envelope_from_pb(request.envelope))
        return empty_pb2.Empty()

    def register_ttrpc(self, server: TTRPCRegistrar, /) -> None:
        server.register(SERVICE, self)
