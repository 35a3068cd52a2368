"""The sans-IO ttrpc connection: bytes in, events out; calls in, bytes out.

``Connection(Role.CLIENT)`` or ``Connection(Role.SERVER)`` owns every piece of
per-stream state. ``receive_data(b)`` parses what the peer sent and returns
:mod:`~arun.ttrpc.events` (``b""`` means end of input); the ``send_*`` methods only
append frames to a buffer that ``data_to_send()`` hands out. Nothing here does I/O,
awaits or reads a clock.

Stream states live in the one transition table :data:`TRANSITIONS`. What the peer
gets wrong never raises:

* as a server, each bad frame is answered with an error Response on the offending
  stream id (as the Go server does: even id, reused or decreasing id, Data for a
  stream that is not open, oversized frame, undecodable Request) and reported as a
  :class:`~arun.ttrpc.events.StreamFailed`; the connection lives on;
* as a client, a bad frame on an open stream fails that stream
  (:class:`~arun.ttrpc.events.StreamFailed`); frames for unknown streams are dropped.

What this side gets wrong raises :class:`~arun.ttrpc.errors.LocalProtocolError`
and changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any

from arun.ttrpc import envelope
from arun.ttrpc.errors import LocalProtocolError, OversizedMessageError
from arun.ttrpc.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StreamFailed,
)
from arun.ttrpc.frames import HEADER, MAX_DATA, Flags, Frame, FrameDecoder, MessageType, Oversized
from arun.ttrpc.lite import DecodeError

__all__ = ["TRANSITIONS", "Act", "Connection", "Role", "StreamState"]

_Request = envelope.ttrpc_Request
_Response = envelope.ttrpc_Response
_KeyValue = envelope.ttrpc_KeyValue
_Status = envelope.google_rpc_Status
_pack = HEADER.pack

_REQUEST = MessageType.REQUEST.value
_RESPONSE = MessageType.RESPONSE.value
_DATA = MessageType.DATA.value
_REMOTE_CLOSED = Flags.REMOTE_CLOSED.value
_REMOTE_OPEN = Flags.REMOTE_OPEN.value
_NO_DATA = Flags.NO_DATA.value
_CLOSE = _REMOTE_CLOSED | _NO_DATA

_MAX_STREAM_ID = 0xFFFFFFFF

# Status codes used by the connection itself (see status.Code).
_INVALID_ARGUMENT = 3
_RESOURCE_EXHAUSTED = 8
_INTERNAL = 13


class Role(enum.Enum):
    CLIENT = "client"  # connected; opens streams with odd ids
    SERVER = "server"  # accepted; answers them

    __hash__ = object.__hash__


class StreamState(enum.Enum):
    OPEN = "open"  # both sides may still send
    LOCAL_CLOSED = "local-closed"  # this side sent its last frame; the peer may still send
    REMOTE_CLOSED = "remote-closed"  # the peer sent its last frame; this side may still send
    CLOSED = "closed"  # finished; the stream is forgotten

    # Members are singletons: identity hashing keeps the table lookups off Enum.__hash__ (a
    # Python-level function), which showed in the profile of the call path.
    __hash__ = object.__hash__


class Act(enum.Enum):
    """What happens to a stream: a frame sent or received."""

    SEND_REQUEST = "send Request"  # unary or server-streaming: nothing more from the client
    SEND_REQUEST_OPEN = "send Request(remote-open)"  # client- or bidi-streaming
    RECV_REQUEST = "receive Request"
    RECV_REQUEST_OPEN = "receive Request(remote-open)"
    SEND_DATA = "send Data"
    SEND_DATA_END = "send Data(remote-closed)"
    SEND_RESPONSE = "send Response"
    RECV_DATA = "receive Data"
    RECV_DATA_END = "receive Data(remote-closed)"
    RECV_RESPONSE = "receive Response"

    __hash__ = object.__hash__


_C, _S = Role.CLIENT, Role.SERVER
_OPEN, _LOCAL, _REMOTE, _CLOSED = (
    StreamState.OPEN,
    StreamState.LOCAL_CLOSED,
    StreamState.REMOTE_CLOSED,
    StreamState.CLOSED,
)

# (role, state before — None for a stream not yet open —, act) -> state after.
# A missing key is an illegal act. The server's last frame (Response, or Data with
# remote-closed) finishes the stream on both sides, whatever the client's half: the
# Go server forgets a stream as soon as it has sent its last frame.
TRANSITIONS: dict[tuple[Role, StreamState | None, Act], StreamState] = {
    # client
    (_C, None, Act.SEND_REQUEST): _LOCAL,
    (_C, None, Act.SEND_REQUEST_OPEN): _OPEN,
    (_C, _OPEN, Act.SEND_DATA): _OPEN,
    (_C, _OPEN, Act.SEND_DATA_END): _LOCAL,
    (_C, _OPEN, Act.RECV_DATA): _OPEN,
    (_C, _LOCAL, Act.RECV_DATA): _LOCAL,
    (_C, _OPEN, Act.RECV_DATA_END): _CLOSED,
    (_C, _LOCAL, Act.RECV_DATA_END): _CLOSED,
    (_C, _OPEN, Act.RECV_RESPONSE): _CLOSED,
    (_C, _LOCAL, Act.RECV_RESPONSE): _CLOSED,
    # server
    (_S, None, Act.RECV_REQUEST): _REMOTE,
    (_S, None, Act.RECV_REQUEST_OPEN): _OPEN,
    (_S, _OPEN, Act.RECV_DATA): _OPEN,
    (_S, _OPEN, Act.RECV_DATA_END): _REMOTE,
    (_S, _OPEN, Act.SEND_DATA): _OPEN,
    (_S, _REMOTE, Act.SEND_DATA): _REMOTE,
    (_S, _OPEN, Act.SEND_DATA_END): _CLOSED,
    (_S, _REMOTE, Act.SEND_DATA_END): _CLOSED,
    (_S, _OPEN, Act.SEND_RESPONSE): _CLOSED,
    (_S, _REMOTE, Act.SEND_RESPONSE): _CLOSED,
}


# The same table split by role, keyed by (state, act): what the hot paths look up.
_CLIENT_T = {(b, a): after for (r, b, a), after in TRANSITIONS.items() if r is Role.CLIENT}
_SERVER_T = {(b, a): after for (r, b, a), after in TRANSITIONS.items() if r is Role.SERVER}
_SEND_REQUEST, _SEND_REQUEST_OPEN = Act.SEND_REQUEST, Act.SEND_REQUEST_OPEN
_RECV_REQUEST, _RECV_REQUEST_OPEN = Act.RECV_REQUEST, Act.RECV_REQUEST_OPEN
_SEND_DATA, _SEND_DATA_END, _SEND_RESPONSE = Act.SEND_DATA, Act.SEND_DATA_END, Act.SEND_RESPONSE
_RECV_DATA, _RECV_DATA_END, _RECV_RESPONSE = Act.RECV_DATA, Act.RECV_DATA_END, Act.RECV_RESPONSE


class _Stream:
    __slots__ = ("server_streaming", "state")

    def __init__(self, state: StreamState, server_streaming: bool) -> None:
        self.state = state
        # Client side: whether the method streams replies (Data frames allowed).
        self.server_streaming = server_streaming


class Connection:
    """One ttrpc connection's protocol state, for either role."""

    __slots__ = ("_decoder", "_eof", "_last_id", "_next_id", "_out", "_streams", "role")

    def __init__(self, role: Role) -> None:
        self.role = role
        self._decoder = FrameDecoder()
        self._out: list[bytes] = []
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1  # client: next stream id to open
        self._last_id = 0  # server: highest Request id accepted
        self._eof = False

    # -- state queries -------------------------------------------------------------------------

    def stream_state(self, stream_id: int) -> StreamState:
        st = self._streams.get(stream_id)
        return StreamState.CLOSED if st is None else st.state

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def closed(self) -> bool:
        """True once end of input was received."""
        return self._eof

    # -- output --------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything buffered by the ``send_*`` calls, and clears the buffer."""
        out = self._out
        if not out:
            return b""
        if len(out) == 1:
            data = out[0]
        else:
            data = b"".join(out)
        out.clear()
        return data

    def _frame(self, stream_id: int, type_: int, flags: int, data: bytes) -> None:
        self._out.append(_pack(len(data), stream_id, type_, flags) + data)

    def _transition(self, stream_id: int, st: _Stream | None, act: Act) -> StreamState:
        before = None if st is None else st.state
        after = (_CLIENT_T if self.role is _C else _SERVER_T).get((before, act))
        if after is None:
            state = "not open" if before is None else before.value
            raise LocalProtocolError(f"cannot {act.value} on stream {stream_id}: it is {state}")
        return after

    def _apply(self, stream_id: int, st: _Stream, after: StreamState) -> None:
        if after is _CLOSED:
            del self._streams[stream_id]
        else:
            st.state = after

    # -- client calls --------------------------------------------------------------------------

    def send_request(
        self,
        service: str,
        method: str,
        payload: bytes = b"",
        *,
        timeout_nano: int = 0,
        metadata: Iterable[tuple[str, str]] = (),
        client_streaming: bool = False,
        server_streaming: bool = False,
    ) -> int:
        """Open a stream with a Request; returns its (odd, increasing) id.

        Flags follow the Go client: 0 for unary, remote-open when the client streams,
        remote-closed when only the server streams.
        """
        if self.role is not _C:
            raise LocalProtocolError("only a client sends requests")
        req = _Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
        if metadata:
            req.metadata.extend([_KeyValue(key=k, value=v) for k, v in metadata])
        data = req.SerializeToString()
        if len(data) > MAX_DATA:
            raise OversizedMessageError(len(data), MAX_DATA)
        stream_id = self._next_id
        if stream_id > _MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted on this connection")
        if client_streaming:
            act, flags = _SEND_REQUEST_OPEN, _REMOTE_OPEN
        else:
            act, flags = _SEND_REQUEST, (_REMOTE_CLOSED if server_streaming else 0)
        after = _CLIENT_T[(None, act)]
        self._next_id = stream_id + 2
        self._streams[stream_id] = _Stream(after, server_streaming)
        self._out.append(_pack(len(data), stream_id, _REQUEST, flags) + data)
        return stream_id

    def forget_stream(self, stream_id: int) -> None:
        """Client gives up on a stream (cancelled, deadline passed). The server is not told;
        a late reply is dropped."""
        self._streams.pop(stream_id, None)

    # -- both roles ----------------------------------------------------------------------------

    def send_data(self, stream_id: int, data: bytes) -> None:
        """One stream message (a Data frame with flags 0; an empty message is 0 bytes)."""
        if len(data) > MAX_DATA:
            raise OversizedMessageError(len(data), MAX_DATA)
        st = self._streams.get(stream_id)
        after = self._transition(stream_id, st, _SEND_DATA)
        assert st is not None
        self._apply(stream_id, st, after)
        self._frame(stream_id, _DATA, 0, data)

    def end_stream(self, stream_id: int) -> None:
        """Data frame with remote-closed and no-data: a client half-closes; a streaming server
        ends the stream successfully."""
        st = self._streams.get(stream_id)
        after = self._transition(stream_id, st, _SEND_DATA_END)
        assert st is not None
        self._apply(stream_id, st, after)
        self._frame(stream_id, _DATA, _CLOSE, b"")

    # -- server calls --------------------------------------------------------------------------

    def send_response(
        self,
        stream_id: int,
        payload: bytes = b"",
        code: int = 0,
        message: str = "",
        details: Sequence[Any] = (),
    ) -> None:
        """The final Response of a stream: its status, and the reply message when OK."""
        st = self._streams.get(stream_id)
        after = self._transition(stream_id, st, _SEND_RESPONSE)
        assert st is not None
        if code:
            data = _Response(status=_Status(code=code, message=message, details=details)).SerializeToString()
        else:
            data = _Response(status=_OK_STATUS, payload=payload).SerializeToString()
        if len(data) > MAX_DATA:
            raise OversizedMessageError(len(data), MAX_DATA)
        self._apply(stream_id, st, after)
        self._out.append(_pack(len(data), stream_id, _RESPONSE, 0) + data)

    # -- input ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the peer; ``b""`` is end of input. Never raises on bad input."""
        if self._eof:
            raise LocalProtocolError("receive_data after end of input")
        events: list[Event] = []
        if not data:
            self._eof = True
            pending = self._decoder.pending
            self._streams.clear()
            events.append(
                ConnectionClosed(f"connection closed in a frame ({pending} bytes)" if pending else None)
            )
            return events
        handle = self._server_frame if self.role is _S else self._client_frame
        for frame in self._decoder.feed(data):
            handle(frame, events)
        return events

    def _reject(self, stream_id: int, code: int, message: str, events: list[Event]) -> None:
        """Server: answer a bad frame with an error Response on its stream id; an open stream
        with that id is finished by it."""
        self._streams.pop(stream_id, None)
        body = _Response(status=_Status(code=code, message=message)).SerializeToString()
        self._out.append(_pack(len(body), stream_id, _RESPONSE, 0) + body)
        events.append(StreamFailed(stream_id, code, message))

    def _server_frame(self, frame: Frame | Oversized, events: list[Event]) -> None:
        stream_id = frame.stream_id
        if type(frame) is Oversized:
            self._reject(
                stream_id,
                _RESOURCE_EXHAUSTED,
                f"message length {frame.length} exceed maximum message size of {MAX_DATA}",
                events,
            )
            return
        assert type(frame) is Frame
        if not stream_id & 1:
            self._reject(
                stream_id, _INVALID_ARGUMENT, "StreamID must be odd for client initiated streams", events
            )
            return
        type_ = frame.type
        if type_ == _REQUEST:
            if stream_id <= self._last_id:
                self._reject(
                    stream_id, _INVALID_ARGUMENT, "StreamID cannot be re-used and must increment", events
                )
                return
            self._last_id = stream_id
            try:
                req = _Request.FromString(frame.data)
            except DecodeError as exc:
                self._reject(stream_id, _INVALID_ARGUMENT, f"unmarshal request error: {exc}", events)
                return
            act = _RECV_REQUEST_OPEN if frame.flags & _REMOTE_OPEN else _RECV_REQUEST
            self._streams[stream_id] = _Stream(_SERVER_T[(None, act)], False)
            md = req.metadata
            events.append(
                RequestReceived(
                    stream_id,
                    req.service,
                    req.method,
                    req.payload,
                    req.timeout_nano,
                    tuple([(kv.key, kv.value) for kv in md]) if md else (),
                    frame.flags,
                )
            )
        elif type_ == _DATA:
            st = self._streams.get(stream_id)
            if st is None:
                self._reject(stream_id, _INVALID_ARGUMENT, "StreamID is no longer active", events)
                return
            flags = frame.flags
            end = bool(flags & _REMOTE_CLOSED)
            after = _SERVER_T.get((st.state, _RECV_DATA_END if end else _RECV_DATA))
            if after is None:
                self._reject(
                    stream_id, _INVALID_ARGUMENT, "data handling error: ttrpc: stream closed", events
                )
                return
            if end and frame.data:
                self._reject(stream_id, _INVALID_ARGUMENT, "data close message cannot include data", events)
                return
            st.state = after
            if flags & _NO_DATA:
                # The Go server delivers nothing for a no-data frame; with remote-closed it is EOF.
                if end:
                    events.append(DataReceived(stream_id, None, True))
            else:
                events.append(DataReceived(stream_id, frame.data, end))
        # Anything else (a Response from a client, unknown types) is ignored for compatibility.

    def _fail(self, stream_id: int, code: int, message: str, events: list[Event]) -> None:
        del self._streams[stream_id]
        events.append(StreamFailed(stream_id, code, message))

    def _client_frame(self, frame: Frame | Oversized, events: list[Event]) -> None:
        stream_id = frame.stream_id
        st = self._streams.get(stream_id)
        if st is None:
            return  # a late reply to a stream given up on, or nonsense: dropped
        if type(frame) is Oversized:
            self._fail(
                stream_id,
                _RESOURCE_EXHAUSTED,
                f"message length {frame.length} exceed maximum message size of {MAX_DATA}",
                events,
            )
            return
        assert type(frame) is Frame
        type_ = frame.type
        if type_ == _RESPONSE:
            try:
                resp = _Response.FromString(frame.data)
            except DecodeError as exc:
                self._fail(stream_id, _INTERNAL, f"unmarshal response error: {exc}", events)
                return
            self._apply(stream_id, st, _CLIENT_T[(st.state, _RECV_RESPONSE)])
            if resp.HasField("status") and resp.status.code:
                status = resp.status
                events.append(
                    ResponseReceived(
                        stream_id, resp.payload, status.code, status.message, tuple(status.details)
                    )
                )
            else:
                events.append(ResponseReceived(stream_id, resp.payload))
        elif type_ == _DATA:
            if not st.server_streaming:
                self._fail(stream_id, _INTERNAL, "received data from non-streaming server", events)
                return
            flags = frame.flags
            if flags & _REMOTE_CLOSED:
                self._apply(stream_id, st, _CLIENT_T[(st.state, _RECV_DATA_END)])
                events.append(DataReceived(stream_id, None if flags & _NO_DATA else frame.data, True))
            else:
                st.state = _CLIENT_T[(st.state, _RECV_DATA)]
                # A no-data frame without close is an empty message (Go servers send nil bytes so).
                events.append(DataReceived(stream_id, frame.data, False))
        else:
            self._fail(stream_id, _INTERNAL, f"unexpected message type {type_} received", events)


_OK_STATUS = _Status()
