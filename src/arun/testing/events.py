"""A publisher that records what it is given (for tests of the stores)."""

from __future__ import annotations

from dataclasses import dataclass

from arun import namespaces


@dataclass
class Published:
    namespace: str
    topic: str
    event: object


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[Published] = []

    async def publish(self, topic: str, event: object) -> None:
        self.events.append(Published(namespaces.required(), topic, event))

    def topics(self) -> list[str]:
        return [e.topic for e in self.events]
