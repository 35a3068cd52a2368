"""Events produced by :meth:`arun.ttrpc.connection.Connection.receive_data`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arun.ttrpc.frames import Flags

__all__ = [
    "ConnectionClosed",
    "DataReceived",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "StreamFailed",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every connection event."""


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """Server side: a client opened a stream."""

    stream_id: int
    service: str
    method: str
    payload: bytes
    timeout_nano: int = 0
    metadata: tuple[tuple[str, str], ...] = ()
    flags: int = 0

    @property
    def remote_closed(self) -> bool:
        """True unless the client announced more Data frames (flag remote-open)."""
        return not self.flags & Flags.REMOTE_OPEN


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """A stream message. ``data`` is None for a pure close (flag no-data with remote-closed);
    ``end_stream`` says the peer sends nothing more on this stream."""

    stream_id: int
    data: bytes | None
    end_stream: bool = False


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """Client side: the final Response of a stream (the stream is finished)."""

    stream_id: int
    payload: bytes
    code: int = 0
    message: str = ""
    details: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamFailed(Event):
    """A stream ended because of a protocol error.

    Client side: fail the call with (code, message). Server side: a frame was rejected and an
    error Response with this status is already queued on ``stream_id``; if a handler runs for
    that stream it must be stopped, its stream is gone.
    """

    stream_id: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """End of input. ``error`` is set when it cut a frame short."""

    error: str | None = None
