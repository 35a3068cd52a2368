"""The exceptions of the ttrpc package.

Nothing here knows about arun's errdefs: a server turns handler exceptions into
status codes, and a client turns status codes back into exceptions, through the
pluggable hooks of :mod:`arun.ttrpc.status`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ClosedError",
    "LocalProtocolError",
    "OversizedMessageError",
    "ProtocolError",
    "RemoteProtocolError",
    "StatusError",
    "TTRPCError",
]

# The few status numbers needed here (see status.Code; importing it would be circular).
_INTERNAL = 13
_RESOURCE_EXHAUSTED = 8


class TTRPCError(Exception):
    """Base of every exception raised by the ttrpc package."""


class ProtocolError(TTRPCError):
    """A frame or call that the protocol does not allow. ``code`` is the status it maps to."""

    def __init__(self, message: str, code: int = _INTERNAL) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol forbids (nothing was sent)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class OversizedMessageError(LocalProtocolError):
    """Refusal to send more than MAX_DATA bytes in one frame (Go: OversizedMessageErr)."""

    def __init__(self, length: int, maximum: int) -> None:
        super().__init__(
            f"message length {length} exceed maximum message size of {maximum}", _RESOURCE_EXHAUSTED
        )
        self.length = length
        self.maximum = maximum


class ClosedError(TTRPCError):
    """The connection is gone; every pending call fails with this (Go: ErrClosed)."""

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(message)


class StatusError(TTRPCError):
    """A non-OK status: raised by a handler to choose the status, or received by a client
    when no ``from_status`` hook turns it into something more specific."""

    def __init__(self, code: int, message: str = "", details: Sequence[Any] = ()) -> None:
        super().__init__(code, message)
        self.code = int(code)
        self.message = message
        self.details: tuple[Any, ...] = tuple(details)

    def __str__(self) -> str:
        return f"ttrpc: code = {self.code} desc = {self.message}"
