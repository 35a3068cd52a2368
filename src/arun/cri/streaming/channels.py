"""The WebSocket channel protocols of Kubernetes streaming, without I/O.

Each WebSocket message carries one channel's data behind a channel byte:

* ``channel.k8s.io`` and its versions (``v4.``, ``v5.``): binary messages, first
  byte the channel number, the rest raw data;
* ``base64.channel.k8s.io`` and ``v4.base64.channel.k8s.io``: text messages,
  first character the channel number as an ASCII digit (``'0' + n``), the rest
  the data in standard base64;
* ``v5.channel.k8s.io`` adds a close signal: the two bytes ``255, n`` mean the
  sender will write nothing more on channel ``n`` (a half-close).

For exec and attach the channels are 0 stdin, 1 stdout, 2 stderr, 3 error and 4
resize. For port-forward (``v4.channel.k8s.io`` and base64) there are two per
requested port, ``2i`` data and ``2i + 1`` error, and the first message the
server writes on each starts with the port as a little-endian uint16.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from arun.cri.streaming import constants as c

STDIN = 0
STDOUT = 1
STDERR = 2
ERROR = 3
RESIZE = 4
CLOSE_SIGNAL = 255

_PORT = struct.Struct("<H")


class ChannelProtocolError(Exception):
    """A message that breaks the channel protocol (bad base64, a malformed close signal)."""


@dataclass(frozen=True)
class ChannelProtocol:
    """How one negotiated subprotocol frames its messages."""

    name: str
    base64: bool = False
    close_signal: bool = False
    #: Exit status on the error channel as JSON (v4 and later); before that, only a failure's text.
    json_status: bool = False


#: exec/attach over WebSocket. "" is what a client that names no subprotocol gets.
REMOTECOMMAND_PROTOCOLS: Mapping[str, ChannelProtocol] = {
    c.REMOTECOMMAND_V5: ChannelProtocol(c.REMOTECOMMAND_V5, close_signal=True, json_status=True),
    c.REMOTECOMMAND_V4: ChannelProtocol(c.REMOTECOMMAND_V4, json_status=True),
    c.BASE64_V4: ChannelProtocol(c.BASE64_V4, base64=True, json_status=True),
    c.REMOTECOMMAND_V1: ChannelProtocol(c.REMOTECOMMAND_V1),
    c.BASE64_V1: ChannelProtocol(c.BASE64_V1, base64=True),
    "": ChannelProtocol(""),
}

#: port-forward over WebSocket with channel pairs (the SPDY tunnel is separate).
PORTFORWARD_PROTOCOLS: Mapping[str, ChannelProtocol] = {
    c.REMOTECOMMAND_V4: ChannelProtocol(c.REMOTECOMMAND_V4),
    c.BASE64_V4: ChannelProtocol(c.BASE64_V4, base64=True),
    "": ChannelProtocol(""),
}


def negotiate(offered: list[str], supported: Mapping[str, ChannelProtocol]) -> ChannelProtocol | None:
    """The client's first offered subprotocol that is supported; ``""`` when it offered none."""
    if not offered:
        return supported.get("")
    for name in offered:
        if name and name in supported:
            return supported[name]
    return None


@dataclass(frozen=True)
class ChannelData:
    channel: int
    data: bytes


@dataclass(frozen=True)
class ChannelClosed:
    """A v5 close signal: the peer will send nothing more on ``channel``."""

    channel: int


def encode(protocol: ChannelProtocol, channel: int, data: bytes) -> bytes | str:
    """One message carrying ``data`` on ``channel``: bytes for a binary protocol, str for base64."""
    if not 0 <= channel < CLOSE_SIGNAL:
        raise ValueError(f"channel {channel} out of range")
    if protocol.base64:
        if channel > 9:
            raise ValueError(f"channel {channel} cannot be written as one digit")
        return chr(ord("0") + channel) + base64.b64encode(data).decode("ascii")
    return bytes((channel,)) + data


def encode_close(channel: int) -> bytes:
    """The v5 close signal for ``channel``."""
    if not 0 <= channel < CLOSE_SIGNAL:
        raise ValueError(f"channel {channel} out of range")
    return bytes((CLOSE_SIGNAL, channel))


def decode(protocol: ChannelProtocol, message: bytes | str) -> ChannelData | ChannelClosed | None:
    """What one received message means; None for an empty message (which carries nothing).

    Binary and text messages are both accepted whatever the protocol, as Go's
    ``x/net/websocket`` receive does; only the framing (raw or base64) follows the
    protocol.
    """
    raw = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    if not raw:
        return None
    if protocol.close_signal and raw[0] == CLOSE_SIGNAL:
        if len(raw) != 2:
            raise ChannelProtocolError(f"close signal of {len(raw)} bytes, expected 2")
        return ChannelClosed(raw[1])
    if protocol.base64:
        channel = raw[0] - ord("0")
        if channel < 0:
            raise ChannelProtocolError(f"invalid channel character {raw[0]!r}")
        try:
            data = base64.b64decode(raw[1:], validate=True)
        except binascii.Error as exc:
            raise ChannelProtocolError(f"invalid base64 on channel {channel}: {exc}") from exc
        return ChannelData(channel, data)
    return ChannelData(raw[0], raw[1:])


def encode_port(port: int) -> bytes:
    """The port prefix of port-forward channels: a little-endian uint16."""
    return _PORT.pack(port)


def decode_port(data: bytes) -> int:
    if len(data) < 2:
        raise ChannelProtocolError("port prefix needs 2 bytes")
    return int(_PORT.unpack_from(data, 0)[0])
