"""The server side of one HTTP/2 connection (RFC 9113), sans-IO, shaped for grpclib.

grpclib's server protocol drives an ``h2.connection.H2Connection``: it feeds the received bytes to
``receive_data``, dispatches the returned events by their exact h2 class, and calls
``send_headers``/``send_data``/``end_stream``/``reset_stream`` and ``data_to_send``. h2 is
general (client and server, push, priorities, validation, per-frame objects from hyperframe, a
state machine per stream) and costs ~200 us of the daemon's CPU to take in one grpc-go request
and ~120 us to produce its answer. ``ServerConnection`` is the part of that interface grpclib's
*server* path uses, nothing else: frames are parsed and built with ``struct``, a stream is a few
slots, and events and exceptions are h2's own classes, so grpclib cannot tell the difference.

What it does, by RFC 9113 section:

* 3.4: the client preface, then a SETTINGS frame first; our SETTINGS go out at
  ``initiate_connection``.
* 4.2, 6.x: frame sizes (our SETTINGS_MAX_FRAME_SIZE; fixed lengths of PING, WINDOW_UPDATE,
  RST_STREAM, PRIORITY, SETTINGS); padding; PRIORITY parsed and ignored; unknown frame types
  ignored; PUSH_PROMISE from a client is a PROTOCOL_ERROR.
* 5.1: client streams are odd and increasing; a stream is open, half-closed (either way) or
  gone: a closed stream is dropped from ``streams`` at once, so a connection serving millions of
  calls holds only the open ones. Frames that arrive for a stream we (or the client) just reset
  are ignored (a bounded memory of recent resets); DATA or HEADERS for another closed stream are a
  stream error STREAM_CLOSED, for an idle one a PROTOCOL_ERROR.
* 5.1.2: past our SETTINGS_MAX_CONCURRENT_STREAMS a new stream is refused (RST_STREAM
  REFUSED_STREAM).
* 5.4: a connection error queues a GOAWAY with its code and raises ``RemoteProtocolError`` (an
  ``h2.exceptions.ProtocolError``, which grpclib catches); a stream error queues a RST_STREAM and,
  if grpclib knows the stream, returns a ``StreamReset(remote_reset=False)`` so its handler is
  cancelled.
* 6.5: the client's settings are validated and applied (INITIAL_WINDOW_SIZE moves every open
  stream's send window) and acknowledged; ours take effect when the client acknowledges them.
* 6.9: flow control both ways. DATA counts against the connection's and the stream's receive
  windows; the space comes back (WINDOW_UPDATE) once grpclib has handed the bytes to the handler
  (``acknowledge_received_data``) and half a window is used, so a long upload (Content.Write) keeps
  flowing with a few updates. Sending more than a send window allows raises ``FlowControlError``.
* 8.1: a second header block on a stream is its trailers and must end the stream.

Header blocks are (de)compressed by the HPACK codec imported below; a block that cannot be decoded
is a COMPRESSION_ERROR, a header that is not ASCII (grpclib's server reads headers as ASCII
``str``) resets only its stream.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAckReceived,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import FlowControlError, FrameTooLargeError, ProtocolError, StreamClosedError
from h2.settings import ChangedSetting, SettingCodes

from arun.server.http2.hpack import Decoder, Encoder, HPACKError

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# Flags.
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# Settings identifiers (section 6.5.2).
HEADER_TABLE_SIZE: Final = 0x1
ENABLE_PUSH: Final = 0x2
MAX_CONCURRENT_STREAMS: Final = 0x3
INITIAL_WINDOW_SIZE: Final = 0x4
MAX_FRAME_SIZE: Final = 0x5
MAX_HEADER_LIST_SIZE: Final = 0x6
ENABLE_CONNECT_PROTOCOL: Final = 0x8

MAX_WINDOW: Final = 2**31 - 1
DEFAULT_WINDOW: Final = 65535
MIN_FRAME_SIZE: Final = 2**14
MAX_FRAME_SIZE_LIMIT: Final = 2**24 - 1

# How many recently reset stream ids are remembered, so that the frames the client sent before it
# saw the reset are ignored instead of answered with another RST_STREAM.
RESET_MEMORY: Final = 1024
# A header block assembled from CONTINUATION frames may be at most this many frames (an endless run
# of empty CONTINUATIONs costs CPU without growing the block).
MAX_BLOCK_FRAMES: Final = 64

# 24-bit length (as 8 + 16 bits), type, flags, stream id (its reserved bit is masked off).
_FRAME_HEADER = struct.Struct(">BHBBL")
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_GOAWAY = struct.Struct(">LL")


def frame_header(frame_type: int, flags: int, stream_id: int, length: int) -> bytes:
    """The 9 octets in front of every frame."""
    return _FRAME_HEADER.pack(length >> 16, length & 0xFFFF, frame_type, flags, stream_id)


def error_code(value: int) -> ErrorCodes | int:
    """``value`` as h2's ``ErrorCodes`` member where it is one (events carry those), else the int."""
    try:
        return ErrorCodes(value)
    except ValueError:
        return value


def setting_code(value: int) -> SettingCodes | int:
    """``value`` as h2's ``SettingCodes`` member where it is one (grpclib looks them up so)."""
    try:
        return SettingCodes(value)
    except ValueError:
        return value


class RemoteProtocolError(ProtocolError):
    """The client broke the protocol: a GOAWAY with ``error_code`` is queued, the connection is over."""

    def __init__(self, message: str, code: ErrorCodes) -> None:
        super().__init__(message)
        self.error_code = code


@dataclass
class LocalSettings:
    """Our settings as the client has acknowledged them (grpclib reads ``initial_window_size``)."""

    header_table_size: int = 4096
    enable_push: int = 0
    initial_window_size: int = DEFAULT_WINDOW
    max_frame_size: int = MIN_FRAME_SIZE
    enable_connect_protocol: int = 0
    max_concurrent_streams: int = 100
    max_header_list_size: int = 65536

    def as_dict(self) -> dict[int, int]:
        """In the order h2 sends them, so our first SETTINGS frame is byte for byte h2's."""
        return {
            HEADER_TABLE_SIZE: self.header_table_size,
            ENABLE_PUSH: self.enable_push,
            INITIAL_WINDOW_SIZE: self.initial_window_size,
            MAX_FRAME_SIZE: self.max_frame_size,
            ENABLE_CONNECT_PROTOCOL: self.enable_connect_protocol,
            MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
            MAX_HEADER_LIST_SIZE: self.max_header_list_size,
        }


_LOCAL_FIELDS: Final = {
    HEADER_TABLE_SIZE: "header_table_size",
    ENABLE_PUSH: "enable_push",
    INITIAL_WINDOW_SIZE: "initial_window_size",
    MAX_FRAME_SIZE: "max_frame_size",
    ENABLE_CONNECT_PROTOCOL: "enable_connect_protocol",
    MAX_CONCURRENT_STREAMS: "max_concurrent_streams",
    MAX_HEADER_LIST_SIZE: "max_header_list_size",
}


class StateMachine:
    """Only what grpclib looks at: ``state``, compared with ``ConnectionState.CLOSED``."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = ConnectionState.IDLE


class Stream:
    """A stream that is not closed: which sides may still send, and its two flow-control windows.

    ``remote_open``: the client has not ended it (half-closed (remote) when False);
    ``local_open``: we have not ended it (half-closed (local) when False). Both False never
    lasts: the connection drops the stream then.
    """

    __slots__ = (
        "local_open",
        "recv_max",
        "recv_unacked",
        "recv_window",
        "remote_open",
        "send_window",
        "stream_id",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int, remote_open: bool) -> None:
        self.stream_id = stream_id
        self.remote_open = remote_open
        self.local_open = True
        self.send_window = send_window
        self.recv_window = recv_window
        # The window size we keep restoring, and what was consumed but not yet given back.
        self.recv_max = recv_window
        self.recv_unacked = 0

    @property
    def open(self) -> bool:
        """h2's meaning: open or half-closed, i.e. counted against the concurrency limit."""
        return self.remote_open or self.local_open

    @property
    def closed(self) -> bool:
        return not (self.remote_open or self.local_open)


class _HeaderBlock:
    """A header block still waiting for its CONTINUATION frames."""

    __slots__ = ("end_stream", "fragments", "frames", "new", "size", "stream_id")

    def __init__(self, stream_id: int, end_stream: bool, new: bool, fragment: bytes) -> None:
        self.stream_id = stream_id
        self.end_stream = end_stream
        self.new = new
        self.fragments = [fragment]
        self.size = len(fragment)
        self.frames = 1


class ServerConnection:
    """One HTTP/2 connection, server side: bytes in, h2 events out; calls in, bytes out."""

    def __init__(self, *, max_concurrent_streams: int = 100, max_header_list_size: int = 65536) -> None:
        self.local_settings = LocalSettings(
            max_concurrent_streams=max_concurrent_streams, max_header_list_size=max_header_list_size
        )
        # Our settings frames the client has not acknowledged yet, oldest first.
        self._pending_settings: deque[dict[int, int]] = deque()
        # The client's settings (RFC defaults until its SETTINGS frame arrives).
        self.remote_settings: dict[int, int] = {
            HEADER_TABLE_SIZE: 4096,
            ENABLE_PUSH: 1,
            INITIAL_WINDOW_SIZE: DEFAULT_WINDOW,
            MAX_FRAME_SIZE: MIN_FRAME_SIZE,
        }
        self.max_outbound_frame_size = MIN_FRAME_SIZE
        self.state_machine = StateMachine()
        self.streams: dict[int, Stream] = {}
        self._highest_stream_id = 0
        self._recently_reset: dict[int, None] = {}

        # Connection flow control: what we may still send, what the client may still send.
        self._send_window = DEFAULT_WINDOW
        self._recv_window = DEFAULT_WINDOW
        self._recv_max = DEFAULT_WINDOW
        self._recv_unacked = 0

        self._decoder = Decoder(max_table_size=4096, max_header_list_size=max_header_list_size)
        self._encoder = Encoder()
        # A compressed block is never much larger than the header list it encodes.
        self._max_header_block = 2 * max_header_list_size
        self._header_block: _HeaderBlock | None = None

        self._preface_seen = False
        self._goaway_received = False
        self._settings_seen = False
        self._input = b""
        self._out: list[bytes] = []
        self._handlers: tuple[Callable[[int, int, bytes, list[Event]], None], ...] = (
            self._on_data,
            self._on_headers,
            self._on_priority,
            self._on_rst_stream,
            self._on_settings,
            self._on_push_promise,
            self._on_ping,
            self._on_goaway,
            self._on_window_update,
            self._on_continuation,
        )

    # --- what grpclib calls -------------------------------------------------------------------

    def initiate_connection(self) -> None:
        """Queue our connection preface: a SETTINGS frame with all our settings.

        They are in force from the start, as with h2 (a client that opens more than
        SETTINGS_MAX_CONCURRENT_STREAMS streams before it read them gets some refused), and are
        queued as pending too, so that the client's first ACK is matched with this frame and not
        with a later one.
        """
        settings = self.local_settings.as_dict()
        self._pending_settings.append(settings)
        self._emit_settings(settings)

    def update_settings(self, new_settings: dict[SettingCodes | int, int]) -> None:
        """Send new values of our settings; they apply when the client acknowledges them."""
        settings = {int(code): value for code, value in new_settings.items()}
        self._pending_settings.append(settings)
        self._emit_settings(settings)

    def increment_flow_control_window(self, increment: int, stream_id: int | None = None) -> None:
        """Let the client send ``increment`` more bytes (on the connection, or on ``stream_id``)."""
        if not 1 <= increment <= MAX_WINDOW:
            raise ValueError(f"flow control increment must be 1..{MAX_WINDOW}, not {increment}")
        if stream_id is None or stream_id == 0:
            if self._recv_window + increment > MAX_WINDOW:
                raise FlowControlError("connection receive window would exceed 2^31-1")
            self._recv_window += increment
            self._recv_max = max(self._recv_max, self._recv_window)
            stream_id = 0
        else:
            stream = self._stream_for_sending(stream_id, need_local=False)
            if stream.recv_window + increment > MAX_WINDOW:
                raise FlowControlError(f"receive window of stream {stream_id} would exceed 2^31-1")
            stream.recv_window += increment
            stream.recv_max = max(stream.recv_max, stream.recv_window)
        self._emit(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))

    def data_to_send(self) -> bytes:
        """Everything queued since the last call, in order."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def local_flow_control_window(self, stream_id: int) -> int:
        """How many bytes of DATA may be sent on ``stream_id`` now (may be negative)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            raise StreamClosedError(stream_id)
        return min(self._send_window, stream.send_window)

    def send_headers(
        self, stream_id: int, headers: Iterable[tuple[str, str]], end_stream: bool = False
    ) -> None:
        """Queue a header block (response headers or trailers), split to the client's frame size."""
        stream = self._stream_for_sending(stream_id)
        block = self._encoder.encode(headers)
        limit = self.max_outbound_frame_size
        flags = END_STREAM if end_stream else 0
        if len(block) <= limit:
            self._emit(HEADERS, flags | END_HEADERS, stream_id, block)
        else:
            last = len(block) - limit
            self._emit(HEADERS, flags, stream_id, block[:limit])
            for start in range(limit, len(block), limit):
                self._emit(
                    CONTINUATION, END_HEADERS if start >= last else 0, stream_id, block[start : start + limit]
                )
        if end_stream:
            self._close_local(stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue one DATA frame; it must fit the client's frame size and both send windows."""
        stream = self._stream_for_sending(stream_id)
        size = len(data)
        if size > self.max_outbound_frame_size:
            raise FrameTooLargeError(
                f"{size} bytes of DATA exceed the frame size {self.max_outbound_frame_size}"
            )
        if size > self._send_window or size > stream.send_window:
            raise FlowControlError(
                f"{size} bytes of DATA exceed the send window "
                f"(connection {self._send_window}, stream {stream_id} {stream.send_window})"
            )
        self._send_window -= size
        stream.send_window -= size
        self._emit(DATA, END_STREAM if end_stream else 0, stream_id, data)
        if end_stream:
            self._close_local(stream)

    def end_stream(self, stream_id: int) -> None:
        """End our side of ``stream_id`` with an empty DATA frame."""
        stream = self._stream_for_sending(stream_id)
        self._emit(DATA, END_STREAM, stream_id, b"")
        self._close_local(stream)

    def reset_stream(self, stream_id: int, error_code: ErrorCodes | int = 0) -> None:
        """Close ``stream_id`` at once with a RST_STREAM."""
        if stream_id not in self.streams:
            raise StreamClosedError(stream_id)
        self._reset(stream_id, int(error_code), None)

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        """The application took ``acknowledged_size`` bytes of DATA: give the space back in time.

        A WINDOW_UPDATE goes out once half of a window is used up (as h2 does): few updates, and
        the client never waits as long as the application reads.
        """
        if acknowledged_size < 0:
            raise ValueError("cannot acknowledge a negative amount of data")
        if not acknowledged_size:
            return
        self._give_back(acknowledged_size)
        stream = self.streams.get(stream_id)
        if stream is not None and stream.remote_open:
            unacked = stream.recv_unacked + acknowledged_size
            if unacked >= stream.recv_max >> 1:
                stream.recv_unacked = 0
                stream.recv_window += unacked
                self._emit(WINDOW_UPDATE, 0, stream_id, _U32.pack(unacked))
            else:
                stream.recv_unacked = unacked

    def ping(self, opaque_data: bytes) -> None:
        """Queue a PING with 8 octets of ``opaque_data``."""
        if len(opaque_data) != 8:
            raise ValueError("a PING carries exactly 8 octets")
        self._emit(PING, 0, 0, opaque_data)

    def receive_data(self, data: bytes) -> list[Event]:
        """Take in received bytes; return the events they complete, in order.

        Raises ``RemoteProtocolError`` (after queueing a GOAWAY) when the client broke the
        protocol; the connection takes no more input then.
        """
        if self.state_machine.state is ConnectionState.CLOSED:
            raise ProtocolError("the connection is closed")
        if self._input:
            data = self._input + data
            self._input = b""
        if not self._preface_seen:
            if len(data) < len(PREFACE):
                if not PREFACE.startswith(data):
                    raise self._fail(ErrorCodes.PROTOCOL_ERROR, "invalid connection preface")
                self._input = data
                return []
            if not data.startswith(PREFACE):
                raise self._fail(ErrorCodes.PROTOCOL_ERROR, "invalid connection preface")
            self._preface_seen = True
            data = data[len(PREFACE) :]
        events: list[Event] = []
        handlers = self._handlers
        end = len(data)
        pos = 0
        while end - pos >= 9:
            high, low, frame_type, flags, stream_id = _FRAME_HEADER.unpack_from(data, pos)
            length = high << 16 | low
            if length > self.local_settings.max_frame_size:
                raise self._fail(
                    ErrorCodes.FRAME_SIZE_ERROR, f"a frame of {length} octets exceeds our frame size"
                )
            start = pos + 9
            stop = start + length
            if stop > end:
                break
            pos = stop
            if self._header_block is not None and frame_type != CONTINUATION:
                raise self._fail(ErrorCodes.PROTOCOL_ERROR, "a header block was interrupted by another frame")
            if not self._settings_seen:
                if frame_type != SETTINGS or flags & ACK:
                    raise self._fail(ErrorCodes.PROTOCOL_ERROR, "the client preface must start with SETTINGS")
                self._settings_seen = True
            if frame_type < 10:
                handlers[frame_type](flags, stream_id & 0x7FFFFFFF, data[start:stop], events)
                if self._goaway_received:
                    return events  # nothing after the client's GOAWAY matters
            # Unknown frame types are ignored (section 5.5).
        if pos < end:
            self._input = data[pos:]
        return events

    # --- received frames ----------------------------------------------------------------------

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not stream_id:
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        body = self._unpad(flags, payload) if flags & PADDED else payload
        self._recv_window -= size
        if self._recv_window < 0:
            raise self._fail(ErrorCodes.FLOW_CONTROL_ERROR, "DATA beyond the connection's receive window")
        stream = self.streams.get(stream_id)
        if stream is None or not stream.remote_open:
            # grpclib never sees these bytes: hand their connection window back ourselves.
            self._give_back(size)
            if stream is None:
                if stream_id > self._highest_stream_id:
                    raise self._fail(ErrorCodes.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
                if stream_id in self._recently_reset:
                    return
            self._reset(stream_id, ErrorCodes.STREAM_CLOSED, events)
            return
        stream.recv_window -= size
        if stream.recv_window < 0:
            raise self._fail(
                ErrorCodes.FLOW_CONTROL_ERROR, f"DATA beyond the receive window of stream {stream_id}"
            )
        end_stream = flags & END_STREAM
        if not size and not end_stream:
            # An empty DATA frame says nothing; grpclib's stream buffer would take it for the end.
            return
        received = DataReceived(stream_id=stream_id, data=body, flow_controlled_length=size)
        events.append(received)
        if end_stream:
            ended = StreamEnded(stream_id=stream_id)
            received.stream_ended = ended
            events.append(ended)
            self._close_remote(stream)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not stream_id:
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpad(flags, payload) if flags & PADDED else payload
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise self._fail(ErrorCodes.FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
            depends_on = _U32.unpack_from(block)[0] & 0x7FFFFFFF
            block = block[5:]
        else:
            depends_on = 0
        new = stream_id > self._highest_stream_id
        if new:
            if not stream_id & 1:
                raise self._fail(ErrorCodes.PROTOCOL_ERROR, f"client stream id {stream_id} is even")
            self._highest_stream_id = stream_id
        elif stream_id not in self.streams and stream_id not in self._recently_reset:
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, f"HEADERS on closed stream {stream_id}")
        if depends_on == stream_id:
            # Section 5.3.1: a stream cannot depend on itself. The block still updates the HPACK state.
            self._decode(block)
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR, events)
            return
        if flags & END_HEADERS:
            self._on_header_block(stream_id, bool(flags & END_STREAM), new, block, events)
            return
        if len(block) > self._max_header_block:
            raise self._fail(ErrorCodes.ENHANCE_YOUR_CALM, "header block too large")
        self._header_block = _HeaderBlock(stream_id, bool(flags & END_STREAM), new, block)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        pending = self._header_block
        if pending is None or pending.stream_id != stream_id:
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, "CONTINUATION without a header block to continue")
        pending.size += len(payload)
        pending.frames += 1
        if pending.size > self._max_header_block or pending.frames > MAX_BLOCK_FRAMES:
            raise self._fail(ErrorCodes.ENHANCE_YOUR_CALM, "header block too large")
        pending.fragments.append(payload)
        if flags & END_HEADERS:
            self._header_block = None
            block = b"".join(pending.fragments)
            self._on_header_block(stream_id, pending.end_stream, pending.new, block, events)

    def _on_header_block(
        self, stream_id: int, end_stream: bool, new: bool, block: bytes, events: list[Event]
    ) -> None:
        # Decoded whatever happens to the stream: the HPACK state is the connection's.
        raw = self._decode(block)
        stream = self.streams.get(stream_id)
        if new:
            if len(self.streams) >= self.local_settings.max_concurrent_streams:
                self._reset(stream_id, ErrorCodes.REFUSED_STREAM, events)
                return
            headers = self._ascii(raw)
            if headers is None:
                self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR, events)
                return
            stream = Stream(
                stream_id,
                self.remote_settings[INITIAL_WINDOW_SIZE],
                self.local_settings.initial_window_size,
                not end_stream,
            )
            self.streams[stream_id] = stream
            request = RequestReceived(stream_id=stream_id, headers=headers)  # type: ignore[arg-type]
            events.append(request)
            if end_stream:
                ended = StreamEnded(stream_id=stream_id)
                request.stream_ended = ended
                events.append(ended)
            return
        if stream is None:
            return  # a stream we reset: the client had not seen it yet
        if not stream.remote_open:
            self._reset(stream_id, ErrorCodes.STREAM_CLOSED, events)
            return
        headers = self._ascii(raw)
        if not end_stream or headers is None:
            # Section 8.1: a second header block is trailers, and trailers end the stream.
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR, events)
            return
        trailers = TrailersReceived(stream_id=stream_id, headers=headers)  # type: ignore[arg-type]
        ended = StreamEnded(stream_id=stream_id)
        trailers.stream_ended = ended
        events.append(trailers)
        events.append(ended)
        self._close_remote(stream)

    def _on_priority(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not stream_id:
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            code = ErrorCodes.FRAME_SIZE_ERROR
        elif _U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
            code = ErrorCodes.PROTOCOL_ERROR
        else:
            return  # priorities are advice (deprecated by RFC 9113); grpclib ignores them
        if stream_id in self.streams:
            self._reset(stream_id, code, events)

    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise self._fail(ErrorCodes.FRAME_SIZE_ERROR, "RST_STREAM must be 4 octets")
        if not stream_id:
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if stream_id > self._highest_stream_id:
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        if self.streams.pop(stream_id, None) is None:
            return
        self._remember_reset(stream_id)
        code = error_code(_U32.unpack(payload)[0])
        events.append(StreamReset(stream_id=stream_id, error_code=code, remote_reset=True))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id:
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise self._fail(ErrorCodes.FRAME_SIZE_ERROR, "a SETTINGS ACK carries no payload")
            events.append(self._apply_acknowledged_settings())
            return
        if len(payload) % 6:
            raise self._fail(ErrorCodes.FRAME_SIZE_ERROR, "SETTINGS payload is not a multiple of 6 octets")
        changed = RemoteSettingsChanged()
        for code, value in _SETTING.iter_unpack(payload):
            self._apply_remote_setting(code, value)
            key = setting_code(code)
            old = self.remote_settings.get(code)
            self.remote_settings[code] = value
            changed.changed_settings[key] = ChangedSetting(key, old, value)
        self._emit(SETTINGS, ACK, 0, b"")
        events.append(changed)

    def _on_push_promise(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        raise self._fail(ErrorCodes.PROTOCOL_ERROR, "a client must not send PUSH_PROMISE")

    def _on_ping(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id:
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise self._fail(ErrorCodes.FRAME_SIZE_ERROR, "PING must be 8 octets")
        if flags & ACK:
            events.append(PingAckReceived(ping_data=payload))
        else:
            self._emit(PING, ACK, 0, payload)
            events.append(PingReceived(ping_data=payload))

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id:
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise self._fail(ErrorCodes.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 octets")
        last_stream_id, code = _GOAWAY.unpack_from(payload)
        terminated = ConnectionTerminated()
        terminated.error_code = error_code(code)
        terminated.last_stream_id = last_stream_id & 0x7FFFFFFF
        terminated.additional_data = payload[8:]
        self.state_machine.state = ConnectionState.CLOSED
        self._goaway_received = True
        events.append(terminated)

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise self._fail(ErrorCodes.FRAME_SIZE_ERROR, "WINDOW_UPDATE must be 4 octets")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise self._fail(ErrorCodes.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise self._fail(ErrorCodes.FLOW_CONTROL_ERROR, "connection send window beyond 2^31-1")
            events.append(WindowUpdated(stream_id=0, delta=increment))
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self._highest_stream_id:
                raise self._fail(ErrorCodes.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # a closed stream: updates may still be on their way (section 6.9)
        if not increment:
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR, events)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._reset(stream_id, ErrorCodes.FLOW_CONTROL_ERROR, events)
            return
        events.append(WindowUpdated(stream_id=stream_id, delta=increment))

    # --- helpers ------------------------------------------------------------------------------

    def _unpad(self, flags: int, payload: bytes) -> bytes:
        """The payload of a PADDED frame without its pad length octet and padding."""
        if not payload:
            raise self._fail(ErrorCodes.FRAME_SIZE_ERROR, "PADDED frame without a pad length")
        pad = payload[0]
        if pad >= len(payload):
            raise self._fail(ErrorCodes.PROTOCOL_ERROR, "padding as long as the frame")
        return payload[1 : len(payload) - pad]

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return self._decoder.decode(block)
        except HPACKError as exc:
            raise self._fail(ErrorCodes.COMPRESSION_ERROR, f"header block cannot be decoded: {exc}") from exc

    @staticmethod
    def _ascii(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]] | None:
        """Headers as grpclib's server wants them (``str``), None if one is not ASCII."""
        try:
            return [(name.decode("ascii"), value.decode("ascii")) for name, value in raw]
        except UnicodeDecodeError:
            return None

    def _apply_remote_setting(self, code: int, value: int) -> None:
        if code == INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise self._fail(ErrorCodes.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE beyond 2^31-1")
            delta = value - self.remote_settings[INITIAL_WINDOW_SIZE]
            for stream in self.streams.values():
                stream.send_window += delta
                if stream.send_window > MAX_WINDOW:
                    raise self._fail(ErrorCodes.FLOW_CONTROL_ERROR, "a stream's send window beyond 2^31-1")
        elif code == MAX_FRAME_SIZE:
            if not MIN_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT:
                raise self._fail(ErrorCodes.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
            self.max_outbound_frame_size = value
        elif code == HEADER_TABLE_SIZE:
            self._encoder.set_max_table_size(value)
        elif code in (ENABLE_PUSH, ENABLE_CONNECT_PROTOCOL):
            if value > 1:
                raise self._fail(ErrorCodes.PROTOCOL_ERROR, f"setting {code} must be 0 or 1, not {value}")

    def _apply_acknowledged_settings(self) -> SettingsAcknowledged:
        acknowledged = SettingsAcknowledged()
        if not self._pending_settings:
            return acknowledged  # an ACK for nothing we sent: nothing to apply
        local = self.local_settings
        for code, value in self._pending_settings.popleft().items():
            name = _LOCAL_FIELDS.get(code)
            old = getattr(local, name) if name is not None else None
            if code == INITIAL_WINDOW_SIZE:
                delta = value - local.initial_window_size
                for stream in self.streams.values():
                    stream.recv_window += delta
                    stream.recv_max += delta
            elif code == HEADER_TABLE_SIZE:
                self._decoder.max_allowed_table_size = value
            if name is not None:
                setattr(local, name, value)
            key = setting_code(code)
            acknowledged.changed_settings[key] = ChangedSetting(key, old, value)
        return acknowledged

    def _stream_for_sending(self, stream_id: int, need_local: bool = True) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None or (need_local and not stream.local_open):
            raise StreamClosedError(stream_id)
        return stream

    def _give_back(self, size: int) -> None:
        """``size`` bytes of the connection's receive window are free again."""
        unacked = self._recv_unacked + size
        if unacked >= self._recv_max >> 1:
            self._recv_unacked = 0
            self._recv_window += unacked
            self._emit(WINDOW_UPDATE, 0, 0, _U32.pack(unacked))
        else:
            self._recv_unacked = unacked

    def _close_local(self, stream: Stream) -> None:
        stream.local_open = False
        if not stream.remote_open:
            del self.streams[stream.stream_id]

    def _close_remote(self, stream: Stream) -> None:
        stream.remote_open = False
        if not stream.local_open:
            del self.streams[stream.stream_id]

    def _reset(self, stream_id: int, code: int, events: list[Event] | None) -> None:
        """A stream error (or grpclib's reset): RST_STREAM, and the stream is gone.

        With ``events``, a stream grpclib knows gets a ``StreamReset`` so its handler stops.
        """
        self._emit(RST_STREAM, 0, stream_id, _U32.pack(code))
        known = self.streams.pop(stream_id, None) is not None
        self._remember_reset(stream_id)
        if known and events is not None:
            events.append(StreamReset(stream_id=stream_id, error_code=error_code(code), remote_reset=False))

    def _remember_reset(self, stream_id: int) -> None:
        recent = self._recently_reset
        recent[stream_id] = None
        if len(recent) > RESET_MEMORY:
            del recent[next(iter(recent))]

    def _fail(self, code: ErrorCodes, message: str) -> RemoteProtocolError:
        """A connection error: queue the GOAWAY, close, and return the exception to raise."""
        self._out.append(frame_header(GOAWAY, 0, 0, 8 + len(message)))
        self._out.append(_GOAWAY.pack(self._highest_stream_id, code) + message.encode())
        self.state_machine.state = ConnectionState.CLOSED
        self._header_block = None
        self._input = b""
        return RemoteProtocolError(message, code)

    def _emit_settings(self, settings: dict[int, int]) -> None:
        self._emit(SETTINGS, 0, 0, b"".join(_SETTING.pack(code, value) for code, value in settings.items()))

    def _emit(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        self._out.append(_FRAME_HEADER.pack(size >> 16, size & 0xFFFF, frame_type, flags, stream_id))
        if size:
            self._out.append(payload)


__all__ = ["PREFACE", "LocalSettings", "RemoteProtocolError", "ServerConnection", "Stream"]
