"""SPDY/3.1 framing and connection state, without I/O.

Kubernetes' streaming protocols (remotecommand ``v2``-``v4.channel.k8s.io`` and
``portforward.k8s.io``) run over SPDY/3.1 as Go's ``moby/spdystream`` speaks it.
This module is that wire format as a sans-IO state machine in the h11/h2 style:

* :class:`Framer` turns bytes into frame objects and back, and owns the two
  zlib contexts that compress header blocks (one per direction, shared by every
  header block of the connection, flushed with ``Z_SYNC_FLUSH`` at the end of
  each block, primed with the SPDY/3 dictionary);
* :class:`Connection` tracks streams and produces events:
  ``receive_data(bytes) -> list[Event]`` (``b""`` means EOF), action methods that
  only queue frames, and ``data_to_send() -> bytes``.

Behaviour matched to spdystream where the spec leaves room (it is the peer that
matters: client-go and kubelet):

* no flow control: WINDOW_UPDATE and SETTINGS are reported as events and
  otherwise ignored, and none are sent; spdystream does the same, so enforcing
  the 64 KiB default window would stall a Go peer that never opens it;
* nothing is sent unprompted: a Go client reads the HTTP 101 response through
  a buffered reader and then hands the raw socket to spdystream, so bytes sent
  right behind the 101 could be lost;
* pings whose id has the peer's parity are echoed; ours come back as acks;
* data for a stream that was open earlier and is now gone is dropped silently
  (it may have been in flight when the stream was reset).
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DICTIONARY",
    "MAX_FRAME_LENGTH",
    "VERSION",
    "Connection",
    "ConnectionClosed",
    "DataFrame",
    "DataReceived",
    "Event",
    "Frame",
    "FrameType",
    "Framer",
    "GoAwayFrame",
    "GoAwayReceived",
    "GoAwayStatus",
    "Headers",
    "HeadersFrame",
    "HeadersReceived",
    "LocalProtocolError",
    "PingAcked",
    "PingFrame",
    "PingReceived",
    "ProtocolError",
    "RemoteProtocolError",
    "Role",
    "RstStatus",
    "RstStreamFrame",
    "Setting",
    "SettingsFrame",
    "SettingsReceived",
    "StreamEnded",
    "StreamOpened",
    "StreamReplied",
    "StreamReset",
    "SynReplyFrame",
    "SynStreamFrame",
    "UnknownControlFrame",
    "WindowUpdateFrame",
    "WindowUpdateReceived",
    "header_value",
]

VERSION = 3
#: Both control and data frames carry a 24-bit length.
MAX_FRAME_LENGTH = (1 << 24) - 1
#: Largest stream id (31 bits).
MAX_STREAM_ID = 0x7FFFFFFF
#: Largest DATA payload this module writes in one frame; longer writes are split.
MAX_DATA_CHUNK = 1 << 16

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

# Limits on received header blocks, as spdystream applies them.
MAX_HEADER_COUNT = 1000
MAX_HEADER_FIELD = 1 << 20
MAX_HEADER_BLOCK = 4 << 20

_U32 = struct.Struct(">I")
_CONTROL_HEADER = struct.Struct(">HHI")  # control bit + version, type, flags + length
_DATA_HEADER = struct.Struct(">II")  # stream id, flags + length


# --- the SPDY/3 header compression dictionary -----------------------------------------------------
# SPDY/3 §2.6.10.1: the zlib dictionary is a list of 32-bit-length-prefixed strings
# (header names, methods, a status line, the version), followed by one literal run of
# status codes, reason phrases, dates, media types and parameters.
_DICT_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type",
    "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
    "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
    "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
)  # fmt: skip
_DICT_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,"
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch"
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _build_dictionary() -> bytes:
    out = bytearray()
    for word in _DICT_WORDS:
        raw = word.encode("ascii")
        out += _U32.pack(len(raw)) + raw
    out += _DICT_TAIL.encode("ascii")
    return bytes(out)


#: The 1,423-byte SPDY/3 dictionary; its Adler-32 (the zlib DICTID) is 0xE3C6A7C2.
DICTIONARY = _build_dictionary()


# --- enums ----------------------------------------------------------------------------------------
class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 11


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


# --- errors ---------------------------------------------------------------------------------------
class ProtocolError(Exception):
    """Base of the SPDY protocol errors."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol badly enough that the connection must end.

    A GOAWAY with PROTOCOL_ERROR has already been queued by :class:`Connection`;
    the caller flushes ``data_to_send()`` and closes the transport.
    """


class LocalProtocolError(ProtocolError):
    """This side asked for something the protocol forbids (a programming error)."""


# --- headers --------------------------------------------------------------------------------------
#: A header block: (name, value) pairs, names lower case. A name may repeat; on
#: the wire repeated names become one entry whose values are joined by NUL.
Headers = tuple[tuple[str, str], ...]


def header_value(headers: Headers, name: str) -> str | None:
    """The first value of ``name`` (case-insensitive), or None."""
    key = name.lower()
    for k, v in headers:
        if k == key:
            return v
    return None


def _normalize_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, str]] = []
    for name, value in items:
        if not name:
            raise LocalProtocolError("empty header name")
        out.append((name.lower(), value))
    return tuple(out)


def _encode_header_block(headers: Headers) -> bytes:
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name, []).append(value)
    out = bytearray(_U32.pack(len(grouped)))
    for name, values in grouped.items():
        raw_name = name.encode("utf-8", "surrogateescape")
        raw_value = "\x00".join(values).encode("utf-8", "surrogateescape")
        out += _U32.pack(len(raw_name)) + raw_name + _U32.pack(len(raw_value)) + raw_value
    return bytes(out)


def _decode_header_block(block: bytes) -> Headers:
    view = memoryview(block)
    if len(view) < 4:
        raise RemoteProtocolError("truncated header block")
    (count,) = _U32.unpack_from(view, 0)
    if count > MAX_HEADER_COUNT:
        raise RemoteProtocolError(f"header block has {count} headers (limit {MAX_HEADER_COUNT})")
    pos = 4
    out: list[tuple[str, str]] = []

    def take() -> bytes:
        nonlocal pos
        if pos + 4 > len(view):
            raise RemoteProtocolError("truncated header block")
        (n,) = _U32.unpack_from(view, pos)
        if n > MAX_HEADER_FIELD:
            raise RemoteProtocolError(f"header field of {n} bytes (limit {MAX_HEADER_FIELD})")
        pos += 4
        if pos + n > len(view):
            raise RemoteProtocolError("truncated header block")
        raw = bytes(view[pos : pos + n])
        pos += n
        return raw

    for _ in range(count):
        name = take().decode("utf-8", "surrogateescape").lower()
        value = take().decode("utf-8", "surrogateescape")
        out.extend((name, v) for v in value.split("\x00"))
    if pos != len(view):
        raise RemoteProtocolError(f"{len(view) - pos} stray bytes after the header block")
    return tuple(out)


# --- frames ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStreamFrame:
    stream_id: int
    headers: Headers
    associated_to: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReplyFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStreamFrame:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Setting:
    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True)
class SettingsFrame:
    settings: tuple[Setting, ...] = ()
    clear: bool = False


@dataclass(frozen=True)
class PingFrame:
    ping_id: int


@dataclass(frozen=True)
class GoAwayFrame:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdateFrame:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class UnknownControlFrame:
    """A control frame of a type SPDY/3.1 does not define; the spec says to ignore it."""

    frame_type: int
    flags: int
    payload: bytes


Frame = (
    DataFrame
    | SynStreamFrame
    | SynReplyFrame
    | RstStreamFrame
    | SettingsFrame
    | PingFrame
    | GoAwayFrame
    | HeadersFrame
    | WindowUpdateFrame
    | UnknownControlFrame
)


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_LENGTH:
        raise LocalProtocolError(f"control frame payload of {len(payload)} bytes is too large")
    return _CONTROL_HEADER.pack(0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def _check_stream_id(stream_id: int, *, zero_ok: bool = False) -> None:
    if not (0 if zero_ok else 1) <= stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"invalid stream id {stream_id}")


class Framer:
    """Frame codec for one connection: an incremental decoder plus an encoder.

    Header blocks are compressed with one zlib stream per direction for the whole
    connection, so frames must be encoded in the order they are sent and decoded
    in the order they arrive.
    """

    def __init__(self, *, max_frame_length: int = MAX_FRAME_LENGTH, compression_level: int = 9) -> None:
        self._buf = bytearray()
        self._max_frame_length = max_frame_length
        self._compressor = zlib.compressobj(
            compression_level, zlib.DEFLATED, zlib.MAX_WBITS, zdict=DICTIONARY
        )
        self._decompressor = zlib.decompressobj(zlib.MAX_WBITS, zdict=DICTIONARY)

    # ----- encoding
    def _compress(self, headers: Headers) -> bytes:
        raw = _encode_header_block(headers)
        return self._compressor.compress(raw) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        """The wire bytes of ``frame`` (advances the header compressor)."""
        if isinstance(frame, DataFrame):
            _check_stream_id(frame.stream_id)
            if len(frame.data) > MAX_FRAME_LENGTH:
                raise LocalProtocolError(f"data frame of {len(frame.data)} bytes is too large")
            flags = FLAG_FIN if frame.fin else 0
            return _DATA_HEADER.pack(frame.stream_id, (flags << 24) | len(frame.data)) + frame.data
        if isinstance(frame, SynStreamFrame):
            _check_stream_id(frame.stream_id)
            _check_stream_id(frame.associated_to, zero_ok=True)
            if not 0 <= frame.priority <= 7:
                raise LocalProtocolError(f"priority {frame.priority} is not in 0..7")
            flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            payload = struct.pack(
                ">IIBB", frame.stream_id, frame.associated_to, frame.priority << 5, frame.slot
            ) + self._compress(frame.headers)
            return _control(FrameType.SYN_STREAM, flags, payload)
        if isinstance(frame, SynReplyFrame):
            _check_stream_id(frame.stream_id)
            payload = _U32.pack(frame.stream_id) + self._compress(frame.headers)
            return _control(FrameType.SYN_REPLY, FLAG_FIN if frame.fin else 0, payload)
        if isinstance(frame, HeadersFrame):
            _check_stream_id(frame.stream_id)
            payload = _U32.pack(frame.stream_id) + self._compress(frame.headers)
            return _control(FrameType.HEADERS, FLAG_FIN if frame.fin else 0, payload)
        if isinstance(frame, RstStreamFrame):
            _check_stream_id(frame.stream_id)
            if frame.status == 0:
                raise LocalProtocolError("RST_STREAM status 0 is invalid")
            return _control(FrameType.RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, SettingsFrame):
            body = bytearray(_U32.pack(len(frame.settings)))
            for s in frame.settings:
                body += struct.pack(">II", ((s.flags & 0xFF) << 24) | (s.id & 0xFFFFFF), s.value)
            return _control(FrameType.SETTINGS, FLAG_SETTINGS_CLEAR if frame.clear else 0, bytes(body))
        if isinstance(frame, PingFrame):
            if not 1 <= frame.ping_id <= 0xFFFFFFFF:
                raise LocalProtocolError(f"invalid ping id {frame.ping_id}")
            return _control(FrameType.PING, 0, _U32.pack(frame.ping_id))
        if isinstance(frame, GoAwayFrame):
            _check_stream_id(frame.last_good_stream_id, zero_ok=True)
            return _control(FrameType.GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdateFrame):
            _check_stream_id(frame.stream_id, zero_ok=True)
            if not 1 <= frame.delta <= 0x7FFFFFFF:
                raise LocalProtocolError(f"invalid window delta {frame.delta}")
            return _control(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        if isinstance(frame, UnknownControlFrame):
            return _control(frame.frame_type, frame.flags, frame.payload)
        raise TypeError(f"not a SPDY frame: {frame!r}")

    # ----- decoding
    def _decompress(self, payload: bytes) -> Headers:
        try:
            raw = self._decompressor.decompress(payload, MAX_HEADER_BLOCK + 1)
        except zlib.error as exc:
            raise RemoteProtocolError(f"header block does not decompress: {exc}") from exc
        if len(raw) > MAX_HEADER_BLOCK or self._decompressor.unconsumed_tail:
            raise RemoteProtocolError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
        return _decode_header_block(raw)

    def feed(self, data: bytes) -> list[Frame]:
        """Decode every complete frame in the bytes received so far."""
        self._buf += data
        frames: list[Frame] = []
        while True:
            frame = self._next_frame()
            if frame is None:
                return frames
            frames.append(frame)

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buf)

    def _next_frame(self) -> Frame | None:
        buf = self._buf
        if len(buf) < 8:
            return None
        first, flags_length = _DATA_HEADER.unpack_from(buf, 0)
        flags, length = flags_length >> 24, flags_length & 0xFFFFFF
        if length > self._max_frame_length:
            raise RemoteProtocolError(
                f"frame of {length} bytes is over the limit of {self._max_frame_length}"
            )
        if len(buf) < 8 + length:
            return None
        payload = bytes(buf[8 : 8 + length])
        del buf[: 8 + length]
        if not first & 0x80000000:
            stream_id = first & 0x7FFFFFFF
            if stream_id == 0:
                raise RemoteProtocolError("data frame on stream 0")
            return DataFrame(stream_id, payload, bool(flags & FLAG_FIN))
        version = (first >> 16) & 0x7FFF
        frame_type = first & 0xFFFF
        if version != VERSION:
            raise RemoteProtocolError(f"unsupported SPDY version {version}")
        return self._control_frame(frame_type, flags, payload)

    def _control_frame(self, frame_type: int, flags: int, payload: bytes) -> Frame:
        def need(n: int, exact: bool = True) -> None:
            if len(payload) < n or (exact and len(payload) != n):
                name = FrameType(frame_type).name
                raise RemoteProtocolError(f"{name} frame with a payload of {len(payload)} bytes")

        if frame_type == FrameType.SYN_STREAM:
            need(10, exact=False)
            stream_id, assoc, pri, slot = struct.unpack_from(">IIBB", payload, 0)
            stream_id &= 0x7FFFFFFF
            headers = self._decompress(payload[10:])
            if stream_id == 0:
                raise RemoteProtocolError("SYN_STREAM on stream 0")
            return SynStreamFrame(
                stream_id,
                headers,
                associated_to=assoc & 0x7FFFFFFF,
                priority=pri >> 5,
                slot=slot,
                fin=bool(flags & FLAG_FIN),
                unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
            )
        if frame_type in (FrameType.SYN_REPLY, FrameType.HEADERS):
            need(4, exact=False)
            stream_id = _U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
            headers = self._decompress(payload[4:])
            if stream_id == 0:
                raise RemoteProtocolError(f"{FrameType(frame_type).name} on stream 0")
            cls = SynReplyFrame if frame_type == FrameType.SYN_REPLY else HeadersFrame
            return cls(stream_id, headers, fin=bool(flags & FLAG_FIN))
        if frame_type == FrameType.RST_STREAM:
            need(8)
            stream_id, status = struct.unpack(">II", payload)
            stream_id &= 0x7FFFFFFF
            if stream_id == 0 or status == 0:
                raise RemoteProtocolError(f"invalid RST_STREAM (stream {stream_id}, status {status})")
            return RstStreamFrame(stream_id, status)
        if frame_type == FrameType.SETTINGS:
            need(4, exact=False)
            (count,) = _U32.unpack_from(payload, 0)
            if len(payload) != 4 + 8 * count:
                raise RemoteProtocolError(f"SETTINGS frame of {len(payload)} bytes claims {count} entries")
            settings = []
            for i in range(count):
                flag_id, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                settings.append(Setting(flag_id & 0xFFFFFF, value, flag_id >> 24))
            return SettingsFrame(tuple(settings), clear=bool(flags & FLAG_SETTINGS_CLEAR))
        if frame_type == FrameType.PING:
            need(4)
            (ping_id,) = _U32.unpack(payload)
            if ping_id == 0:
                raise RemoteProtocolError("PING with id 0")
            return PingFrame(ping_id)
        if frame_type == FrameType.GOAWAY:
            need(8)
            last, status = struct.unpack(">II", payload)
            return GoAwayFrame(last & 0x7FFFFFFF, status)
        if frame_type == FrameType.WINDOW_UPDATE:
            need(8)
            stream_id, delta = struct.unpack(">II", payload)
            return WindowUpdateFrame(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        return UnknownControlFrame(frame_type, flags, payload)


# --- events ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamOpened:
    """The peer opened a stream (SYN_STREAM); a server answers with :meth:`Connection.reply`."""

    stream_id: int
    headers: Headers
    associated_to: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class StreamReplied:
    """The peer accepted a stream this side opened (SYN_REPLY)."""

    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class DataReceived:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class HeadersReceived:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class StreamEnded:
    """The peer will send nothing more on this stream (a FIN flag arrived)."""

    stream_id: int


@dataclass(frozen=True)
class StreamReset:
    """The stream ended abruptly: the peer sent RST_STREAM, or this side did because of a stream error."""

    stream_id: int
    status: int
    remote: bool = True


@dataclass(frozen=True)
class PingReceived:
    """The peer pinged; the echo is already queued."""

    ping_id: int


@dataclass(frozen=True)
class PingAcked:
    ping_id: int


@dataclass(frozen=True)
class SettingsReceived:
    settings: tuple[Setting, ...]
    clear: bool = False


@dataclass(frozen=True)
class WindowUpdateReceived:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class GoAwayReceived:
    last_good_stream_id: int
    status: int


@dataclass(frozen=True)
class ConnectionClosed:
    """The transport reached EOF."""


Event = (
    StreamOpened
    | StreamReplied
    | DataReceived
    | HeadersReceived
    | StreamEnded
    | StreamReset
    | PingReceived
    | PingAcked
    | SettingsReceived
    | WindowUpdateReceived
    | GoAwayReceived
    | ConnectionClosed
)


# --- connection state -----------------------------------------------------------------------------
@dataclass
class _Stream:
    stream_id: int
    local: bool  # opened by this side
    replied: bool = False  # SYN_REPLY exchanged (or not needed: unidirectional)
    local_closed: bool = False  # this side sent FIN
    remote_closed: bool = False  # the peer sent FIN


@dataclass
class _State:
    next_local_id: int
    last_remote_id: int = 0
    next_ping_id: int = 0
    goaway_sent: bool = False
    goaway_received: bool = False
    closed: bool = False
    streams: dict[int, _Stream] = field(default_factory=dict)


class Connection:
    """SPDY/3.1 session state for one side of a connection.

    Action methods (``open_stream``, ``reply``, ``send_data``, ``end_stream``,
    ``reset_stream``, ``ping``, ``go_away`` …) validate against the stream states
    and queue frames; ``data_to_send()`` returns and clears the queue.
    """

    def __init__(self, role: Role, *, max_frame_length: int = MAX_FRAME_LENGTH) -> None:
        self.role = role
        self._framer = Framer(max_frame_length=max_frame_length)
        client = role is Role.CLIENT
        self._state = _State(next_local_id=1 if client else 2, next_ping_id=1 if client else 2)
        self._out: list[bytes] = []

    # ----- introspection
    @property
    def goaway_sent(self) -> bool:
        return self._state.goaway_sent

    @property
    def goaway_received(self) -> bool:
        return self._state.goaway_received

    @property
    def last_remote_stream_id(self) -> int:
        return self._state.last_remote_id

    def open_streams(self) -> Sequence[int]:
        """Ids of the streams not yet closed in both directions (nor reset)."""
        return tuple(self._state.streams)

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._state.streams

    def local_closed(self, stream_id: int) -> bool:
        """True if this side may not send on ``stream_id`` any more (also for unknown streams)."""
        s = self._state.streams.get(stream_id)
        return s is None or s.local_closed

    def remote_closed(self, stream_id: int) -> bool:
        s = self._state.streams.get(stream_id)
        return s is None or s.remote_closed

    def _remote_parity(self, stream_id: int) -> bool:
        return (stream_id % 2 == 1) == (self.role is Role.SERVER)

    # ----- output
    def _queue(self, frame: Frame) -> None:
        self._out.append(self._framer.encode(frame))

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _stream_for_send(self, stream_id: int) -> _Stream:
        s = self._state.streams.get(stream_id)
        if s is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        return s

    def _maybe_forget(self, s: _Stream) -> None:
        if s.local_closed and s.remote_closed:
            self._state.streams.pop(s.stream_id, None)

    # ----- actions
    def open_stream(
        self,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        *,
        fin: bool = False,
        priority: int = 0,
        associated_to: int = 0,
    ) -> int:
        """Queue a SYN_STREAM and return the new stream's id."""
        st = self._state
        if st.goaway_sent or st.goaway_received:
            raise LocalProtocolError("cannot open a stream after GOAWAY")
        if st.closed:
            raise LocalProtocolError("connection is closed")
        stream_id = st.next_local_id
        if stream_id > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted")
        st.next_local_id += 2
        frame = SynStreamFrame(
            stream_id, _normalize_headers(headers), associated_to=associated_to, priority=priority, fin=fin
        )
        self._queue(frame)
        st.streams[stream_id] = _Stream(stream_id, local=True, local_closed=fin)
        return stream_id

    def reply(
        self,
        stream_id: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        fin: bool = False,
    ) -> None:
        """Queue the SYN_REPLY that accepts a stream the peer opened."""
        s = self._stream_for_send(stream_id)
        if s.local:
            raise LocalProtocolError(f"stream {stream_id} was opened by this side; only the peer replies")
        if s.replied:
            raise LocalProtocolError(f"stream {stream_id} has already been replied to")
        s.replied = True
        self._queue(SynReplyFrame(stream_id, _normalize_headers(headers), fin=fin))
        if fin:
            s.local_closed = True
            self._maybe_forget(s)

    def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        """Queue DATA frames (split in chunks of at most 64 KiB), the last one with FIN if asked."""
        s = self._stream_for_send(stream_id)
        if s.local_closed:
            raise LocalProtocolError(f"stream {stream_id} is closed for sending")
        if not s.local and not s.replied:
            raise LocalProtocolError(f"stream {stream_id} must be replied to before data is sent")
        view = memoryview(data)
        if len(view) <= MAX_DATA_CHUNK:
            self._queue(DataFrame(stream_id, bytes(view), fin))
        else:
            for off in range(0, len(view), MAX_DATA_CHUNK):
                chunk = bytes(view[off : off + MAX_DATA_CHUNK])
                self._queue(DataFrame(stream_id, chunk, fin and off + MAX_DATA_CHUNK >= len(view)))
        if fin:
            s.local_closed = True
            self._maybe_forget(s)

    def end_stream(self, stream_id: int) -> None:
        """Half-close: an empty DATA frame with FIN."""
        self.send_data(stream_id, b"", fin=True)

    def send_headers(
        self, stream_id: int, headers: Mapping[str, str] | Iterable[tuple[str, str]], *, fin: bool = False
    ) -> None:
        s = self._stream_for_send(stream_id)
        if s.local_closed:
            raise LocalProtocolError(f"stream {stream_id} is closed for sending")
        self._queue(HeadersFrame(stream_id, _normalize_headers(headers), fin=fin))
        if fin:
            s.local_closed = True
            self._maybe_forget(s)

    def reset_stream(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        """Queue RST_STREAM; the stream is gone for both sides. A no-op for streams already gone."""
        s = self._state.streams.pop(stream_id, None)
        if s is None:
            return
        self._queue(RstStreamFrame(stream_id, status))

    def ping(self) -> int:
        """Queue a PING with this side's next id (odd for clients, even for servers); returns the id."""
        ping_id = self._state.next_ping_id
        self._state.next_ping_id = ping_id + 2 if ping_id < 0xFFFFFFFD else (2 - ping_id % 2)
        self._queue(PingFrame(ping_id))
        return ping_id

    def send_settings(self, settings: Iterable[Setting], *, clear: bool = False) -> None:
        self._queue(SettingsFrame(tuple(settings), clear=clear))

    def send_window_update(self, stream_id: int, delta: int) -> None:
        self._queue(WindowUpdateFrame(stream_id, delta))

    def go_away(self, status: int = GoAwayStatus.OK) -> None:
        """Queue GOAWAY naming the last stream the peer opened; later peer streams are ignored."""
        if self._state.goaway_sent:
            return
        self._state.goaway_sent = True
        self._queue(GoAwayFrame(self._state.last_remote_id, status))

    # ----- input
    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the transport (``b""`` for EOF) and return what they mean.

        Raises :class:`RemoteProtocolError` on a fatal error, after queueing a
        GOAWAY with PROTOCOL_ERROR.
        """
        st = self._state
        if st.closed:
            return []
        if not data:
            st.closed = True
            return [ConnectionClosed()]
        try:
            frames = self._framer.feed(data)
        except RemoteProtocolError:
            self.go_away(GoAwayStatus.PROTOCOL_ERROR)
            raise
        events: list[Event] = []
        for frame in frames:
            self._handle(frame, events)
        return events

    def _reset_for_error(self, stream_id: int, status: RstStatus, events: list[Event]) -> None:
        existed = self._state.streams.pop(stream_id, None) is not None
        self._queue(RstStreamFrame(stream_id, status))
        if existed:
            events.append(StreamReset(stream_id, status, remote=False))

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        st = self._state
        if isinstance(frame, DataFrame):
            s = st.streams.get(frame.stream_id)
            if s is None:
                if self._ever_opened(frame.stream_id):
                    return  # a stream gone by now; data may have been in flight
                self._reset_for_error(frame.stream_id, RstStatus.INVALID_STREAM, events)
                return
            if s.remote_closed:
                self._reset_for_error(frame.stream_id, RstStatus.STREAM_ALREADY_CLOSED, events)
                return
            if s.local and not s.replied:
                return  # data before SYN_REPLY: spdystream drops it as well
            if frame.data:
                events.append(DataReceived(frame.stream_id, frame.data, frame.fin))
            if frame.fin:
                self._remote_finished(s, events)
            return
        if isinstance(frame, SynStreamFrame):
            sid = frame.stream_id
            if st.goaway_sent:
                return  # after GOAWAY new streams are ignored
            if not self._remote_parity(sid) or sid <= st.last_remote_id:
                self._queue(RstStreamFrame(sid, RstStatus.PROTOCOL_ERROR))
                return
            st.last_remote_id = sid
            s = _Stream(sid, local=False)
            if frame.unidirectional:
                s.replied = True
                s.local_closed = True
            st.streams[sid] = s
            events.append(
                StreamOpened(
                    sid,
                    frame.headers,
                    associated_to=frame.associated_to,
                    priority=frame.priority,
                    fin=frame.fin,
                    unidirectional=frame.unidirectional,
                )
            )
            if frame.fin:
                self._remote_finished(s, events)
            return
        if isinstance(frame, SynReplyFrame):
            s = st.streams.get(frame.stream_id)
            if s is None or not s.local:
                return  # reply for a stream gone or never ours: spdystream ignores it too
            if s.replied:
                self._reset_for_error(frame.stream_id, RstStatus.STREAM_IN_USE, events)
                return
            s.replied = True
            events.append(StreamReplied(frame.stream_id, frame.headers, frame.fin))
            if frame.fin:
                self._remote_finished(s, events)
            return
        if isinstance(frame, HeadersFrame):
            s = st.streams.get(frame.stream_id)
            if s is None or s.remote_closed:
                return
            events.append(HeadersReceived(frame.stream_id, frame.headers, frame.fin))
            if frame.fin:
                self._remote_finished(s, events)
            return
        if isinstance(frame, RstStreamFrame):
            if st.streams.pop(frame.stream_id, None) is not None:
                events.append(StreamReset(frame.stream_id, frame.status, remote=True))
            return
        if isinstance(frame, PingFrame):
            ours = (frame.ping_id % 2) == (st.next_ping_id % 2)
            if ours:
                events.append(PingAcked(frame.ping_id))
            else:
                self._queue(frame)
                events.append(PingReceived(frame.ping_id))
            return
        if isinstance(frame, GoAwayFrame):
            st.goaway_received = True
            events.append(GoAwayReceived(frame.last_good_stream_id, frame.status))
            return
        if isinstance(frame, SettingsFrame):
            events.append(SettingsReceived(frame.settings, frame.clear))
            return
        if isinstance(frame, WindowUpdateFrame):
            events.append(WindowUpdateReceived(frame.stream_id, frame.delta))
            return
        # UnknownControlFrame: ignored, as SPDY/3.1 asks.

    def _ever_opened(self, stream_id: int) -> bool:
        st = self._state
        if self._remote_parity(stream_id):
            return stream_id <= st.last_remote_id
        return stream_id < st.next_local_id

    def _remote_finished(self, s: _Stream, events: list[Event]) -> None:
        s.remote_closed = True
        events.append(StreamEnded(s.stream_id))
        self._maybe_forget(s)


def iter_frames(data: bytes) -> Iterator[Frame]:
    """Decode a complete byte string of frames with a fresh :class:`Framer` (tests, debugging)."""
    framer = Framer()
    yield from framer.feed(data)
    if framer.buffered:
        raise RemoteProtocolError(f"{framer.buffered} bytes of an incomplete frame")
