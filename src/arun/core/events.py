"""Events: envelopes on the exchange, and who publishes, forwards and subscribes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from arun.core import typeurl


@dataclass(frozen=True)
class Envelope:
    timestamp: datetime
    namespace: str
    topic: str
    event: typeurl.Any


class Publisher(Protocol):
    async def publish(self, topic: str, event: object) -> None:
        """Publish ``event`` (a protobuf message or a ``typeurl.Any``) on ``topic`` in the
        current namespace."""
        ...


class Forwarder(Protocol):
    async def forward(self, envelope: Envelope) -> None:
        """Distribute an envelope built elsewhere (a shim, another publisher) as is."""
        ...


class Subscriber(Protocol):
    def subscribe(self, *filters: str) -> AsyncIterator[Envelope]:
        """Envelopes matching any of ``filters`` (all if none), from now on, until the
        iterator is closed. A malformed filter raises InvalidArgumentError here, at the call."""
        ...
