"""The Events servicer over the exchange."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from arun.api.containerd.services.events.v1 import events_grpc
from arun.api.containerd.types import event_pb2
from arun.core import typeurl
from arun.core.events import Envelope
from arun.errdefs import InvalidArgumentError
from arun.events.exchange import Exchange
from arun.services import convert


def envelope_to_pb(env: Envelope) -> event_pb2.Envelope:
    return event_pb2.Envelope(
        timestamp=convert.timestamp(env.timestamp),
        namespace=env.namespace,
        topic=env.topic,
        event=convert.any_to_pb(env.event),
    )


def envelope_from_pb(env: event_pb2.Envelope) -> Envelope:
    if not env.HasField("timestamp"):
        raise InvalidArgumentError("timestamp must be set on forwarded event")
    return Envelope(
        timestamp=convert.from_timestamp(env.timestamp),
        namespace=env.namespace,
        topic=env.topic,
        event=typeurl.Any(env.event.type_url, env.event.value),
    )


class EventsServicer(events_grpc.EventsBase):
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    async def Publish(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.exchange.publish(req.topic, typeurl.Any(req.event.type_url, req.event.value))
        await stream.send_message(empty_pb2.Empty())

    async def Forward(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.exchange.forward(envelope_from_pb(req.envelope))
        await stream.send_message(empty_pb2.Empty())

    async def Subscribe(self, stream: Any) -> None:
        req = await stream.recv_message()
        sub = self.exchange.subscribe(*req.filters)
        try:
            # Headers first, so the client knows the subscription is in place before any event.
            await stream.send_initial_metadata()
            async for env in sub:
                await stream.send_message(envelope_to_pb(env))
        finally:
            sub.close()
