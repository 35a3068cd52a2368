"""The ttrpc Events service shims publish to (``containerd.services.events.ttrpc.v1.Events``).

A shim sends ``Forward`` with an envelope it stamped itself (namespace, topic, time,
event); the envelope goes onto the exchange unchanged, as containerd's ttrpc events
service does.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import empty_pb2

from arun.api.containerd.services.ttrpc.events.v1 import events_pb2
from arun.core import typeurl
from arun.core.events import Envelope, Forwarder
from arun.plugin.ttrpc import TTRPCRegistrar

SERVICE = "containerd.services.events.ttrpc.v1.Events"


class EventsForwarder:
    def __init__(self, exchange: Forwarder) -> None:
        self.exchange = exchange

    def register_ttrpc(self, server: TTRPCRegistrar, /) -> None:
        server.register(SERVICE, self)

    async def Forward(self, request: events_pb2.ForwardRequest) -> empty_pb2.Empty:
        env = request.envelope
        ts = env.timestamp.ToDatetime(tzinfo=UTC) if env.HasField("timestamp") else datetime.now(UTC)
        await self.exchange.forward(
            Envelope(
                timestamp=ts,
                namespace=env.namespace,
                topic=env.topic,
                event=typeurl.Any(env.event.type_url, env.event.value),
            )
        )
        return empty_pb2.Empty()
