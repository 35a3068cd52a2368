"""ttrpc framing: the 10-byte header and an incremental decoder.

Every frame is ``length:u32 | stream_id:u32 | type:u8 | flags:u8`` (big-endian)
followed by ``length`` bytes of data. Data larger than :data:`MAX_DATA` is never
buffered: the decoder skips its bytes and reports an :class:`Oversized` marker
once they have gone by, so the connection stays usable (as the Go peers do).

This module knows nothing about streams; :mod:`arun.ttrpc.connection` does.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "MAX_DATA",
    "Flags",
    "Frame",
    "FrameDecoder",
    "MessageType",
    "Oversized",
    "encode_frame",
]

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
MAX_DATA = 4 << 20  # 4 MiB of data; exactly 4 MiB is allowed

_pack = HEADER.pack
_unpack_from = HEADER.unpack_from


class MessageType(enum.IntEnum):
    REQUEST = 0x01
    RESPONSE = 0x02
    DATA = 0x03


class Flags(enum.IntFlag):
    """Frame flags. "Remote" is named from the receiver's point of view."""

    NONE = 0
    REMOTE_CLOSED = 0x01  # Request, Data: the sender sends nothing more on this stream
    REMOTE_OPEN = 0x02  # Request: the sender will keep sending Data frames
    NO_DATA = 0x04  # Data: the frame carries no message


class Frame(NamedTuple):
    """One decoded frame. ``type`` stays a plain int: unknown types must be representable."""

    stream_id: int
    type: int
    flags: int
    data: bytes


class Oversized(NamedTuple):
    """A frame whose announced length exceeded :data:`MAX_DATA`; its data was skipped."""

    stream_id: int
    type: int
    flags: int
    length: int


def encode_frame(stream_id: int, type_: int, flags: int, data: bytes) -> bytes:
    """Header plus data. The caller enforces :data:`MAX_DATA` (the connection raises on it)."""
    return _pack(len(data), stream_id, type_, flags) + data


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)`` returns every frame completed by those bytes.

    Arbitrary input never raises: any 10 bytes are a valid header. Truncation can only be
    noticed at end of input, through :attr:`pending`.
    """

    __slots__ = ("_buf", "_skip", "_skipped")

    def __init__(self) -> None:
        self._buf = bytearray()
        # Bytes of an oversized frame still to discard, and the marker to report after them.
        self._skip = 0
        self._skipped: Oversized | None = None

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held (or still being skipped); 0 at a frame boundary."""
        return len(self._buf) + self._skip

    def feed(self, data: bytes) -> list[Frame | Oversized]:
        out: list[Frame | Oversized] = []
        if self._skip:
            n = len(data)
            if n < self._skip:
                self._skip -= n
                return out
            data = data[self._skip :]
            self._skip = 0
            assert self._skipped is not None
            out.append(self._skipped)
            self._skipped = None
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < HEADER_SIZE:
                return out
            # Copy the buffer out only once the next frame is complete (or is to be skipped),
            # so a large frame arriving in many chunks is not copied once per chunk.
            length = _unpack_from(buf)[0]
            if length <= MAX_DATA and len(buf) < HEADER_SIZE + length:
                return out
            data = bytes(buf)
            buf.clear()
        elif len(data) < HEADER_SIZE:
            buf += data
            return out
        return self._parse(data, out)

    def _parse(self, data: bytes, out: list[Frame | Oversized]) -> list[Frame | Oversized]:
        pos = 0
        end = len(data)
        while end - pos >= HEADER_SIZE:
            length, stream_id, type_, flags = _unpack_from(data, pos)
            start = pos + HEADER_SIZE
            if length > MAX_DATA:
                marker = Oversized(stream_id, type_, flags, length)
                if end - start >= length:
                    pos = start + length
                    out.append(marker)
                    continue
                self._skip = length - (end - start)
                self._skipped = marker
                return out
            stop = start + length
            if stop > end:
                break
            out.append(Frame(stream_id, type_, flags, data[start:stop]))
            pos = stop
        if pos < end:
            self._buf += data[pos:]
        return out
