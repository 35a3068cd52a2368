"""The sans-IO connection, checked against frames written by hand from the wire facts."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2

from arun.testing.ttrpc import ConnectionPair
from arun.ttrpc.connection import TRANSITIONS, Act, Connection, Role, StreamState
from arun.ttrpc.errors import LocalProtocolError, OversizedMessageError
from arun.ttrpc.events import (
    ConnectionClosed,
    DataReceived,
    RequestReceived,
    ResponseReceived,
    StreamFailed,
)
from arun.ttrpc.frames import HEADER, MAX_DATA


def header(length: int, stream_id: int, type_: int, flags: int) -> bytes:
    return length.to_bytes(4, "big") + stream_id.to_bytes(4, "big") + bytes([type_, flags])


def pb_str(field: int, value: bytes) -> bytes:
    """A length-delimited protobuf field, for the short values used here (< 128 bytes)."""
    assert len(value) < 128
    return bytes([field << 3 | 2, len(value)]) + value


# ttrpc.Request{service: "containerd.task.v2.Task", method: "State", payload: StateRequest{id: "c1"},
#               timeout_nano: 1s, metadata: [{containerd-namespace-ttrpc: default}]}
STATE_REQUEST = b"\x0a\x02c1"
REQUEST_BODY = (
    b"\x0a\x17containerd.task.v2.Task"
    + b"\x12\x05State"
    + b"\x1a\x04" + STATE_REQUEST
    + b"\x20\x80\x94\xeb\xdc\x03"  # field 4 varint 1_000_000_000
    + b"\x2a\x25" + b"\x0a\x1acontainerd-namespace-ttrpc" + b"\x12\x07default"
)  # fmt: skip
GOLDEN_REQUEST = bytes.fromhex("00000053 00000001 01 00") + REQUEST_BODY

# ttrpc.Response{status: {} (OK, present: the Go server sends it so),
#                payload: StateResponse{id: "c1", pid: 42}}
STATE_RESPONSE = b"\x0a\x02c1\x18\x2a"
GOLDEN_OK_RESPONSE = bytes.fromhex("0000000a 00000001 02 00") + b"\x0a\x00" + b"\x12\x06" + STATE_RESPONSE

# ttrpc.Response{status: {code: NOT_FOUND, message: "not found"}}
GOLDEN_ERROR_RESPONSE = bytes.fromhex("0000000f 00000001 02 00") + b"\x0a\x0d\x08\x05\x12\x09not found"


def error_response(stream_id: int, code: int, message: str) -> bytes:
    status = bytes([0x08, code]) + pb_str(2, message.encode())
    body = pb_str(1, status)
    return header(len(body), stream_id, 2, 0) + body


# -- golden frames -------------------------------------------------------------------------------


def test_client_unary_request_is_byte_exact() -> None:
    c = Connection(Role.CLIENT)
    sid = c.send_request(
        "containerd.task.v2.Task",
        "State",
        STATE_REQUEST,
        timeout_nano=1_000_000_000,
        metadata=[("containerd-namespace-ttrpc", "default")],
    )
    assert sid == 1
    assert c.data_to_send() == GOLDEN_REQUEST
    assert c.data_to_send() == b""


def test_server_decodes_golden_request() -> None:
    s = Connection(Role.SERVER)
    assert s.receive_data(GOLDEN_REQUEST) == [
        RequestReceived(
            1,
            "containerd.task.v2.Task",
            "State",
            STATE_REQUEST,
            1_000_000_000,
            (("containerd-namespace-ttrpc", "default"),),
            0,
        )
    ]
    assert s.stream_state(1) is StreamState.REMOTE_CLOSED


def test_server_ok_and_error_responses_are_byte_exact() -> None:
    s = Connection(Role.SERVER)
    s.receive_data(GOLDEN_REQUEST)
    s.send_response(1, STATE_RESPONSE)
    assert s.data_to_send() == GOLDEN_OK_RESPONSE
    assert s.stream_state(1) is StreamState.CLOSED

    s.receive_data(GOLDEN_REQUEST.replace(b"\x00\x00\x00\x01\x01", b"\x00\x00\x00\x03\x01", 1))
    s.send_response(3, code=5, message="not found")
    assert s.data_to_send() == GOLDEN_ERROR_RESPONSE.replace(
        b"\x00\x00\x00\x01\x02", b"\x00\x00\x00\x03\x02", 1
    )


def test_client_decodes_golden_responses() -> None:
    c = Connection(Role.CLIENT)
    c.send_request("containerd.task.v2.Task", "State", STATE_REQUEST)
    assert c.receive_data(GOLDEN_OK_RESPONSE) == [ResponseReceived(1, STATE_RESPONSE, 0, "", ())]
    assert c.stream_state(1) is StreamState.CLOSED
    c.send_request("s", "m")
    assert c.receive_data(
        GOLDEN_ERROR_RESPONSE.replace(b"\x00\x00\x00\x01\x02", b"\x00\x00\x00\x03\x02", 1)
    ) == [ResponseReceived(3, b"", 5, "not found", ())]


def test_status_details_reach_the_client() -> None:
    pair = ConnectionPair()
    sid = pair.client.send_request("s", "m")
    pair.to_server()
    detail = any_pb2.Any(type_url="containerd.v1.Detail", value=b"\x01\x02")
    pair.server.send_response(sid, code=9, message="busy", details=[detail])
    [ev] = pair.to_client()
    assert isinstance(ev, ResponseReceived) and (ev.code, ev.message) == (9, "busy")
    # details come back as the codec's own Any (ttrpc loads no protobuf), with the same content
    assert [(d.type_url, d.value) for d in ev.details] == [(detail.type_url, detail.value)]


def test_request_flags_and_ids_follow_the_go_client() -> None:
    c = Connection(Role.CLIENT)
    ids = [
        c.send_request("s", "unary"),
        c.send_request("s", "server", b"", server_streaming=True),
        c.send_request("s", "client", client_streaming=True),
        c.send_request("s", "bidi", client_streaming=True, server_streaming=True),
    ]
    assert ids == [1, 3, 5, 7]
    wire = c.data_to_send()
    flags = []
    pos = 0
    while pos < len(wire):
        length, sid, type_, fl = HEADER.unpack_from(wire, pos)
        assert type_ == 1
        flags.append((sid, fl))
        pos += 10 + length
    assert flags == [(1, 0x00), (3, 0x01), (5, 0x02), (7, 0x02)]
    assert [c.stream_state(i) for i in ids] == [
        StreamState.LOCAL_CLOSED,
        StreamState.LOCAL_CLOSED,
        StreamState.OPEN,
        StreamState.OPEN,
    ]


def test_client_half_close_and_server_end_are_empty_0x05_data_frames() -> None:
    pair = ConnectionPair()
    sid = pair.client.send_request("s", "bidi", client_streaming=True, server_streaming=True)
    pair.to_server()
    pair.client.send_data(sid, b"\x08\x01")
    pair.client.end_stream(sid)
    assert pair.client.data_to_send() == header(2, sid, 3, 0) + b"\x08\x01" + header(0, sid, 3, 5)
    pair.server.receive_data(header(2, sid, 3, 0) + b"\x08\x01" + header(0, sid, 3, 5))
    pair.server.send_data(sid, b"")
    pair.server.end_stream(sid)
    assert pair.server.data_to_send() == header(0, sid, 3, 0) + header(0, sid, 3, 5)
    assert pair.server.stream_state(sid) is StreamState.CLOSED


# -- server: bad frames get an error Response on their own stream id, the connection lives on -----


def assert_connection_lives(s: Connection, stream_id: int) -> None:
    body = pb_str(1, b"svc") + pb_str(2, b"M")
    assert s.receive_data(header(len(body), stream_id, 1, 0) + body) == [
        RequestReceived(stream_id, "svc", "M", b"", 0, (), 0)
    ]
    s.send_response(stream_id, b"")
    assert s.data_to_send().startswith(header(2, stream_id, 2, 0))


def test_even_stream_id_is_invalid_argument_on_that_id() -> None:
    s = Connection(Role.SERVER)
    body = pb_str(1, b"svc") + pb_str(2, b"M")
    events = s.receive_data(header(len(body), 2, 1, 0) + body)
    msg = "StreamID must be odd for client initiated streams"
    assert events == [StreamFailed(2, 3, msg)]
    assert s.data_to_send() == error_response(2, 3, msg)
    assert_connection_lives(s, 1)


def test_reused_and_decreasing_ids_are_invalid_argument() -> None:
    s = Connection(Role.SERVER)
    assert_connection_lives(s, 5)
    msg = "StreamID cannot be re-used and must increment"
    body = pb_str(1, b"svc") + pb_str(2, b"M")
    assert s.receive_data(header(len(body), 5, 1, 0) + body) == [StreamFailed(5, 3, msg)]
    assert s.data_to_send() == error_response(5, 3, msg)
    assert s.receive_data(header(len(body), 3, 1, 0) + body) == [StreamFailed(3, 3, msg)]
    assert s.data_to_send() == error_response(3, 3, msg)
    assert_connection_lives(s, 7)


def test_reused_id_of_an_open_stream_finishes_it() -> None:
    s = Connection(Role.SERVER)
    body = pb_str(1, b"svc") + pb_str(2, b"M")
    s.receive_data(header(len(body), 1, 1, 0) + body)
    events = s.receive_data(header(len(body), 1, 1, 0) + body)
    assert events == [StreamFailed(1, 3, "StreamID cannot be re-used and must increment")]
    assert s.stream_state(1) is StreamState.CLOSED


def test_data_for_unknown_stream_is_no_longer_active() -> None:
    s = Connection(Role.SERVER)
    msg = "StreamID is no longer active"
    assert s.receive_data(header(1, 9, 3, 0) + b"x") == [StreamFailed(9, 3, msg)]
    assert s.data_to_send() == error_response(9, 3, msg)
    assert_connection_lives(s, 11)


def test_data_after_the_client_closed_is_rejected() -> None:
    s = Connection(Role.SERVER)
    body = pb_str(1, b"svc") + pb_str(2, b"M")
    s.receive_data(header(len(body), 1, 1, 0) + body)  # unary: the client sends nothing more
    msg = "data handling error: ttrpc: stream closed"
    assert s.receive_data(header(1, 1, 3, 0) + b"x") == [StreamFailed(1, 3, msg)]
    assert s.data_to_send() == error_response(1, 3, msg)
    assert s.stream_state(1) is StreamState.CLOSED
    with pytest.raises(LocalProtocolError):
        s.send_response(1, b"")


def test_close_carrying_data_is_rejected() -> None:
    s = Connection(Role.SERVER)
    body = pb_str(1, b"svc") + pb_str(2, b"M")
    s.receive_data(header(len(body), 1, 1, 2) + body)
    msg = "data close message cannot include data"
    assert s.receive_data(header(1, 1, 3, 1) + b"x") == [StreamFailed(1, 3, msg)]
    assert s.data_to_send() == error_response(1, 3, msg)


def test_oversized_request_is_resource_exhausted_and_skipped() -> None:
    s = Connection(Role.SERVER)
    over = MAX_DATA + 10
    events = s.receive_data(header(over, 1, 1, 0) + b"\x0a" * over)
    msg = f"message length {over} exceed maximum message size of {MAX_DATA}"
    assert events == [StreamFailed(1, 8, msg)]
    wire = s.data_to_send()
    _length, sid, type_, flags = HEADER.unpack_from(wire)
    assert (sid, type_, flags) == (1, 2, 0)
    assert wire[10:] == pb_str(1, b"\x08\x08\x12" + bytes([len(msg)]) + msg.encode())
    assert_connection_lives(s, 3)


def test_oversized_data_on_open_stream_finishes_it() -> None:
    s = Connection(Role.SERVER)
    body = pb_str(1, b"svc") + pb_str(2, b"M")
    s.receive_data(header(len(body), 1, 1, 2) + body)
    over = MAX_DATA + 1
    events = s.receive_data(header(over, 1, 3, 0) + bytes(over))
    assert [type(e) for e in events] == [StreamFailed]
    assert s.stream_state(1) is StreamState.CLOSED


def test_undecodable_request_is_invalid_argument() -> None:
    s = Connection(Role.SERVER)
    events = s.receive_data(header(2, 1, 1, 0) + b"\x0a\xff")  # a string field longer than the body
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, StreamFailed) and ev.code == 3 and ev.message.startswith("unmarshal request error")
    wire = s.data_to_send()
    assert wire[:10] == header(len(wire) - 10, 1, 2, 0)
    assert wire[10:12] == b"\x0a" + bytes([len(wire) - 12]) and wire[12:14] == b"\x08\x03"
    assert_connection_lives(s, 3)


def test_unknown_types_and_client_responses_are_ignored_on_odd_ids() -> None:
    s = Connection(Role.SERVER)
    assert s.receive_data(header(1, 1, 0x42, 0) + b"x" + header(0, 1, 2, 0)) == []
    assert s.data_to_send() == b""
    # An even id is checked before the type, as the Go server does.
    assert [type(e) for e in s.receive_data(header(0, 4, 0x42, 0))] == [StreamFailed]
    assert s.data_to_send() == error_response(4, 3, "StreamID must be odd for client initiated streams")
    assert_connection_lives(s, 1)


def test_server_data_flags() -> None:
    s = Connection(Role.SERVER)
    body = pb_str(1, b"svc") + pb_str(2, b"M")
    s.receive_data(header(len(body), 1, 1, 2) + body)
    assert s.receive_data(header(0, 1, 3, 0)) == [DataReceived(1, b"", False)]  # an empty message
    assert s.receive_data(header(0, 1, 3, 4)) == []  # no-data alone delivers nothing (Go)
    assert s.receive_data(header(0, 1, 3, 5)) == [DataReceived(1, None, True)]
    assert s.stream_state(1) is StreamState.REMOTE_CLOSED
    s.receive_data(header(len(body), 3, 1, 2) + body)
    # remote-closed without no-data and an empty body: an empty message, then the end
    assert s.receive_data(header(0, 3, 3, 1)) == [DataReceived(3, b"", True)]


# -- client ---------------------------------------------------------------------------------------


def test_client_drops_frames_for_unknown_streams() -> None:
    c = Connection(Role.CLIENT)
    assert c.receive_data(GOLDEN_OK_RESPONSE) == []
    sid = c.send_request("s", "m")
    c.forget_stream(sid)
    assert c.receive_data(GOLDEN_OK_RESPONSE) == []  # the late reply to a call given up on


def test_client_data_on_unary_stream_fails_it() -> None:
    c = Connection(Role.CLIENT)
    c.send_request("s", "m")
    assert c.receive_data(header(1, 1, 3, 0) + b"x") == [
        StreamFailed(1, 13, "received data from non-streaming server")
    ]
    assert c.stream_state(1) is StreamState.CLOSED


def test_client_unexpected_type_on_live_stream_fails_it() -> None:
    c = Connection(Role.CLIENT)
    c.send_request("s", "m")
    events = c.receive_data(header(0, 1, 1, 0))
    assert len(events) == 1 and isinstance(events[0], StreamFailed) and events[0].code == 13


def test_client_oversized_frame_fails_its_stream_and_reading_goes_on() -> None:
    c = Connection(Role.CLIENT)
    c.send_request("s", "m")
    c.send_request("s", "m")
    over = MAX_DATA + 1
    events = c.receive_data(header(over, 1, 2, 0) + bytes(over) + GOLDEN_OK_RESPONSE.replace(
        b"\x00\x00\x00\x01\x02", b"\x00\x00\x00\x03\x02", 1))  # fmt: skip
    assert events == [
        StreamFailed(1, 8, f"message length {over} exceed maximum message size of {MAX_DATA}"),
        ResponseReceived(3, STATE_RESPONSE),
    ]


def test_client_server_streaming_flags() -> None:
    c = Connection(Role.CLIENT)
    sid = c.send_request("s", "m", b"", server_streaming=True)
    assert c.receive_data(header(1, sid, 3, 0) + b"a") == [DataReceived(sid, b"a", False)]
    assert c.receive_data(header(0, sid, 3, 4)) == [DataReceived(sid, b"", False)]  # Go's nil message
    assert c.receive_data(header(0, sid, 3, 5)) == [DataReceived(sid, None, True)]
    assert c.stream_state(sid) is StreamState.CLOSED
    sid = c.send_request("s", "m", b"", server_streaming=True)
    assert c.receive_data(header(1, sid, 3, 1) + b"z") == [DataReceived(sid, b"z", True)]


def test_undecodable_response_fails_the_stream() -> None:
    c = Connection(Role.CLIENT)
    c.send_request("s", "m")
    events = c.receive_data(header(2, 1, 2, 0) + b"\x0a\xff")
    assert len(events) == 1 and isinstance(events[0], StreamFailed) and events[0].code == 13


def test_eof_inside_a_frame_is_reported() -> None:
    c = Connection(Role.CLIENT)
    c.send_request("s", "m")
    assert c.receive_data(GOLDEN_OK_RESPONSE[:15]) == []
    [ev] = c.receive_data(b"")
    assert isinstance(ev, ConnectionClosed) and ev.error is not None
    assert c.open_streams == 0
    with pytest.raises(LocalProtocolError):
        c.receive_data(b"x")
    s = Connection(Role.SERVER)
    assert s.receive_data(b"") == [ConnectionClosed(None)]


# -- what this side gets wrong raises and changes nothing -----------------------------------------


def test_local_errors() -> None:
    c = Connection(Role.CLIENT)
    unary = c.send_request("s", "m")
    with pytest.raises(LocalProtocolError, match="local-closed"):
        c.send_data(unary, b"x")
    with pytest.raises(LocalProtocolError):
        c.send_response(unary, b"")
    with pytest.raises(LocalProtocolError):
        c.end_stream(99)
    s = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError):
        s.send_request("s", "m")
    with pytest.raises(LocalProtocolError):
        s.send_data(1, b"")
    c.data_to_send()
    assert c.data_to_send() == b""


def test_oversized_sends_raise_resource_exhausted_and_buffer_nothing() -> None:
    pair = ConnectionPair()
    with pytest.raises(OversizedMessageError) as info:
        pair.client.send_request("s", "m", bytes(MAX_DATA))
    assert info.value.code == 8
    assert pair.client.data_to_send() == b""
    sid = pair.client.send_request("s", "m", client_streaming=True, server_streaming=True)
    assert sid == 1  # the refused request used no id
    pair.client.send_data(sid, bytes(MAX_DATA))  # exactly the limit is fine
    with pytest.raises(OversizedMessageError):
        pair.client.send_data(sid, bytes(MAX_DATA + 1))
    pair.to_server()
    with pytest.raises(OversizedMessageError):
        pair.server.send_data(sid, bytes(MAX_DATA + 1))
    with pytest.raises(OversizedMessageError):
        pair.server.send_response(sid, bytes(MAX_DATA))  # the envelope pushes it over
    assert pair.server.stream_state(sid) is StreamState.OPEN
    pair.server.send_response(sid, code=8, message="too big")
    assert pair.to_client() == [ResponseReceived(sid, b"", 8, "too big")]


def test_stream_ids_are_exhausted_not_wrapped() -> None:
    c = Connection(Role.CLIENT)
    c._next_id = 0xFFFFFFFF
    assert c.send_request("s", "m") == 0xFFFFFFFF
    with pytest.raises(LocalProtocolError, match="exhausted"):
        c.send_request("s", "m")


# -- the transition table -------------------------------------------------------------------------


def test_table_describes_every_stream_life() -> None:
    # Every state reachable in the table can reach CLOSED (no stream can get stuck).
    for role in Role:
        edges: dict[StreamState | None, set[StreamState]] = {}
        for (r, before, _act), after in TRANSITIONS.items():
            if r is role:
                edges.setdefault(before, set()).add(after)
        for start in edges:
            seen, todo = set(), [start]
            while todo:
                s = todo.pop()
                for nxt in edges.get(s, ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            assert StreamState.CLOSED in seen, (role, start)
    # Only the client opens by sending, only the server by receiving.
    assert {a for (r, b, a) in TRANSITIONS if b is None and r is Role.CLIENT} == {
        Act.SEND_REQUEST,
        Act.SEND_REQUEST_OPEN,
    }
    assert {a for (r, b, a) in TRANSITIONS if b is None and r is Role.SERVER} == {
        Act.RECV_REQUEST,
        Act.RECV_REQUEST_OPEN,
    }


def test_full_exchange_through_the_pair() -> None:
    pair = ConnectionPair()
    sid = pair.client.send_request("svc", "Chat", b"first", client_streaming=True, server_streaming=True)
    assert pair.to_server() == [RequestReceived(sid, "svc", "Chat", b"first", 0, (), 2)]
    pair.client.send_data(sid, b"one")
    pair.client.end_stream(sid)
    assert pair.to_server() == [DataReceived(sid, b"one", False), DataReceived(sid, None, True)]
    pair.server.send_data(sid, b"reply")
    pair.server.end_stream(sid)
    assert pair.to_client() == [DataReceived(sid, b"reply", False), DataReceived(sid, None, True)]
    assert pair.client.open_streams == pair.server.open_streams == 0
