"""ServerConnection driven byte for byte by h2's client, and by hand-made frames where h2 will not
misbehave for us."""

from __future__ import annotations

import struct
from typing import Any

import h2.config
import h2.connection
import h2.events as ev
import pytest
from h2.errors import ErrorCodes
from h2.exceptions import FlowControlError, FrameTooLargeError, ProtocolError, StreamClosedError
from h2.settings import SettingCodes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arun.server.http2 import connection as conn_mod
from arun.server.http2.connection import PREFACE, RemoteProtocolError, ServerConnection

REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/containerd.services.version.v1.Version/Version"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-go/1.50"),
    ("te", "trailers"),
    ("containerd-namespace", "default"),
]
GRPC_4MIB = 4 * 1024 * 1024


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">BHBBL", n >> 16, n & 0xFFFF, frame_type, flags, stream_id) + payload


def new_client() -> h2.connection.H2Connection:
    return h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))


def setup_like_grpclib(server: ServerConnection) -> None:
    """What grpclib's protocol does with a new connection (4 MiB windows)."""
    server.initiate_connection()
    server.increment_flow_control_window(GRPC_4MIB - 65535)
    server.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: GRPC_4MIB})


def pair(*, grpclib_windows: bool = True, **kw: Any) -> tuple[ServerConnection, h2.connection.H2Connection]:
    """A server and an h2 client past the preface, both sides' settings acknowledged."""
    server = ServerConnection(**kw)
    if grpclib_windows:
        setup_like_grpclib(server)
    else:
        server.initiate_connection()
    client = new_client()
    client.initiate_connection()
    to_server(server, client)
    to_client(server, client)
    to_server(server, client)
    assert server.data_to_send() == b""
    return server, client


def to_server(server: ServerConnection, client: h2.connection.H2Connection) -> list[ev.Event]:
    return server.receive_data(client.data_to_send())


def to_client(server: ServerConnection, client: h2.connection.H2Connection) -> list[ev.Event]:
    return client.receive_data(server.data_to_send())


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def request(client: h2.connection.H2Connection, body: bytes = b"\0\0\0\0\0", end: bool = True) -> int:
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQUEST)
    client.send_data(sid, body, end_stream=end)
    return sid


def answer(server: ServerConnection, sid: int, body: bytes = b"\0\0\0\0\x05abcde") -> None:
    server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    server.send_data(sid, body)
    server.send_headers(sid, [("grpc-status", "0")], end_stream=True)


def frame_types(out: bytes) -> list[int]:
    """The types of the frames in ``out``, in order."""
    types = []
    pos = 0
    while pos < len(out):
        high, low, frame_type = struct.unpack_from(">BHB", out, pos)
        types.append(frame_type)
        pos += 9 + (high << 16 | low)
    return types


def goaway_code(server: ServerConnection) -> Any:
    """The error code of the GOAWAY the server queued, as an h2 client reads it."""
    client = new_client()
    client.initiate_connection()
    client.data_to_send()
    events = client.receive_data(server.data_to_send())
    (terminated,) = of(events, ev.ConnectionTerminated)
    return terminated.error_code


# --- the preface and the ordinary exchange ---------------------------------------------------


def test_our_first_bytes_are_h2s() -> None:
    ours = ServerConnection()
    setup_like_grpclib(ours)
    theirs = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    theirs.initiate_connection()
    theirs.increment_flow_control_window(GRPC_4MIB - 65535)
    theirs.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: GRPC_4MIB})
    assert ours.data_to_send() == theirs.data_to_send()
    assert ours.local_settings.initial_window_size == 65535  # until the client acknowledges


def test_settings_are_acknowledged_both_ways() -> None:
    server = ServerConnection()
    setup_like_grpclib(server)
    client = new_client()
    client.initiate_connection()
    events = to_server(server, client)
    (changed,) = of(events, ev.RemoteSettingsChanged)
    assert SettingCodes.MAX_CONCURRENT_STREAMS in changed.changed_settings
    client_events = to_client(server, client)
    assert of(client_events, ev.SettingsAcknowledged)
    first, ack = of(to_server(server, client), ev.SettingsAcknowledged)
    assert first.changed_settings[SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 100
    assert ack.changed_settings[SettingCodes.INITIAL_WINDOW_SIZE].new_value == GRPC_4MIB
    assert server.local_settings.initial_window_size == GRPC_4MIB


def test_request_response_and_trailers() -> None:
    server, client = pair()
    sid = request(client)
    events = to_server(server, client)
    assert [type(e) for e in events] == [ev.RequestReceived, ev.DataReceived, ev.StreamEnded]
    assert events[0].headers == REQUEST and events[0].stream_id == sid
    assert isinstance(events[0].headers[0][0], str)
    assert events[1].data == b"\0\0\0\0\0" and events[1].flow_controlled_length == 5
    assert server.streams[sid].open and not server.streams[sid].closed
    answer(server, sid)
    got = to_client(server, client)
    assert [type(e) for e in got] == [
        ev.ResponseReceived,
        ev.DataReceived,
        ev.TrailersReceived,
        ev.StreamEnded,
    ]
    assert dict(got[0].headers)[":status"] == "200"
    assert got[1].data == b"\0\0\0\0\x05abcde"
    assert dict(got[2].headers)["grpc-status"] == "0"
    assert sid not in server.streams  # closed streams are forgotten at once


def test_ping_grpc_go_style_with_the_next_request() -> None:
    server, client = pair()
    client.ping(b"12345678")
    client.increment_flow_control_window(5)
    request(client)
    events = to_server(server, client)
    assert [type(e) for e in events][:2] == [ev.PingReceived, ev.WindowUpdated]
    assert events[0].ping_data == b"12345678"
    assert events[1].stream_id == 0 and events[1].delta == 5
    acks = of(to_client(server, client), ev.PingAckReceived)
    assert [a.ping_data for a in acks] == [b"12345678"]
    server.ping(b"abcdefgh")
    assert of(to_client(server, client), ev.PingReceived)[0].ping_data == b"abcdefgh"
    assert of(to_server(server, client), ev.PingAckReceived)[0].ping_data == b"abcdefgh"
    with pytest.raises(ValueError):
        server.ping(b"short")


def test_many_sequential_streams_leave_no_state() -> None:
    server, client = pair()
    for _ in range(2000):
        sid = request(client)
        events = to_server(server, client)
        data = of(events, ev.DataReceived)[0]
        server.acknowledge_received_data(data.flow_controlled_length, sid)
        answer(server, sid)
        assert of(to_client(server, client), ev.StreamEnded)
        to_server(server, client)  # the client's window updates
    assert server.streams == {}
    assert sid == 3999


def test_concurrent_streams_answered_in_any_order() -> None:
    server, client = pair()
    sids = [request(client, body=bytes([i]) * 3, end=False) for i in range(50)]
    events = to_server(server, client)
    assert [e.stream_id for e in of(events, ev.RequestReceived)] == sids
    assert len(server.streams) == 50
    for sid in reversed(sids):
        client.end_stream(sid)
    assert len(of(to_server(server, client), ev.StreamEnded)) == 50
    for i, sid in enumerate(reversed(sids)):
        answer(server, sid, body=str(i).encode())
    got = to_client(server, client)
    assert len(of(got, ev.StreamEnded)) == 50
    assert [e.stream_id for e in of(got, ev.ResponseReceived)] == list(reversed(sids))
    assert server.streams == {}


def test_client_trailers_end_the_stream() -> None:
    server, client = pair()
    sid = request(client, end=False)
    to_server(server, client)
    client.send_headers(sid, [("x-trailer", "1")], end_stream=True)
    events = to_server(server, client)
    assert [type(e) for e in events] == [ev.TrailersReceived, ev.StreamEnded]
    assert events[0].headers == [("x-trailer", "1")]
    assert not server.streams[sid].remote_open


def test_large_header_blocks_use_continuation_both_ways() -> None:
    server, client = pair()
    big = [*REQUEST, ("x-big", "a" * 40000)]
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, big, end_stream=True)
    (received,) = of(to_server(server, client), ev.RequestReceived)
    assert received.headers == big
    server.send_headers(sid, [(":status", "200"), ("x-big", "b" * 50000)])
    server.send_headers(sid, [("grpc-status", "0")], end_stream=True)
    out = server.data_to_send()
    types = frame_types(out)
    assert types[0] == conn_mod.HEADERS and types.count(conn_mod.CONTINUATION) >= 1
    assert types[-1] == conn_mod.HEADERS
    got = client.receive_data(out)
    assert dict(got[0].headers)["x-big"] == "b" * 50000


def test_padded_data_and_headers_with_priority_and_padding() -> None:
    server, client = pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQUEST, priority_weight=200, priority_depends_on=0)
    client.send_data(sid, b"hello", pad_length=10)
    events = to_server(server, client)
    data = of(events, ev.DataReceived)[0]
    assert of(events, ev.RequestReceived)[0].headers == REQUEST
    assert data.data == b"hello" and data.flow_controlled_length == 16
    # A HEADERS frame with PADDED and PRIORITY, by hand (h2 does not pad headers).
    block = client.encoder.encode(REQUEST)
    payload = bytes([4]) + struct.pack(">LB", 0, 15) + block + b"\0" * 4
    events = server.receive_data(frame(conn_mod.HEADERS, 0x4 | 0x8 | 0x20 | 0x1, 3, payload))
    assert [type(e) for e in events] == [ev.RequestReceived, ev.StreamEnded]
    assert events[0].headers == REQUEST


# --- flow control ----------------------------------------------------------------------------


@pytest.mark.parametrize("grpclib_windows", [True, False])
def test_large_upload_keeps_flowing(grpclib_windows: bool) -> None:
    server, client = pair(grpclib_windows=grpclib_windows)
    total = 10 * 1024 * 1024 + 123
    payload = bytes(range(256)) * (total // 256) + b"x" * (total % 256)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQUEST)
    sent = 0
    received = bytearray()
    updates = 0
    ended = False
    while not ended:
        window = min(client.local_flow_control_window(sid), client.max_outbound_frame_size)
        chunk = payload[sent : sent + window]
        assert chunk or sent == total, "the client's windows closed for good: the upload stalled"
        if chunk:
            sent += len(chunk)
            client.send_data(sid, chunk, end_stream=sent == total)
        for e in to_server(server, client):
            if isinstance(e, ev.DataReceived):
                received += e.data
                server.acknowledge_received_data(e.flow_controlled_length, sid)
            ended = ended or isinstance(e, ev.StreamEnded)
        updates += len(of(to_client(server, client), ev.WindowUpdated))
    assert bytes(received) == payload
    assert updates >= 2


def test_large_download_within_windows_and_frame_size() -> None:
    server, client = pair()
    sid = request(client)
    to_server(server, client)
    server.send_headers(sid, [(":status", "200")])
    total = 3 * 1024 * 1024 + 7  # beyond the client's 64 KiB default windows
    payload = b"z" * total
    sent = 0
    received = bytearray()
    while sent < total:
        window = min(server.local_flow_control_window(sid), server.max_outbound_frame_size)
        if window <= 0:
            with pytest.raises(FlowControlError):
                server.send_data(sid, b"x")
            assert of(to_server(server, client), ev.WindowUpdated), "no window update came: stalled"
            continue
        chunk = payload[sent : sent + window]
        sent += len(chunk)
        server.send_data(sid, chunk, end_stream=sent == total)
        for e in to_client(server, client):
            if isinstance(e, ev.DataReceived):
                received += e.data
                client.acknowledge_received_data(e.flow_controlled_length, sid)
        to_server(server, client)
    assert len(received) == total
    assert sid not in server.streams


def test_data_larger_than_the_frame_size_is_refused() -> None:
    server, client = pair()
    sid = request(client, end=False)
    to_server(server, client)
    with pytest.raises(FrameTooLargeError):
        server.send_data(sid, b"x" * (server.max_outbound_frame_size + 1))


def test_client_settings_change_mid_connection() -> None:
    server, client = pair()
    sid = request(client, end=False)
    to_server(server, client)
    assert server.local_flow_control_window(sid) == 65535
    client.update_settings(
        {
            SettingCodes.INITIAL_WINDOW_SIZE: 100,
            SettingCodes.MAX_FRAME_SIZE: 32768,
            SettingCodes.HEADER_TABLE_SIZE: 0,
        }
    )
    (changed,) = of(to_server(server, client), ev.RemoteSettingsChanged)
    assert changed.changed_settings[SettingCodes.INITIAL_WINDOW_SIZE].original_value == 65535
    assert changed.changed_settings[SettingCodes.INITIAL_WINDOW_SIZE].new_value == 100
    assert server.local_flow_control_window(sid) == 100
    assert server.max_outbound_frame_size == 32768
    assert of(to_client(server, client), ev.SettingsAcknowledged)
    with pytest.raises(FlowControlError):
        server.send_data(sid, b"x" * 101)
    answer(server, sid, body=b"y" * 100)
    got = to_client(server, client)  # the client decodes our headers with its 0-size table
    assert of(got, ev.StreamEnded)
    # The window can go negative after a decrease, and comes back with updates.
    sid = request(client, end=False)
    to_server(server, client)
    server.send_data(sid, b"q" * 100)
    client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 50})
    to_server(server, client)
    assert server.local_flow_control_window(sid) == -50
    client.increment_flow_control_window(80, sid)
    assert of(to_server(server, client), ev.WindowUpdated)[0].delta == 80
    assert server.local_flow_control_window(sid) == 30


# --- resets and the end of the connection -----------------------------------------------------


def test_client_reset_mid_request_then_its_late_frames_are_ignored() -> None:
    server, client = pair(grpclib_windows=False)
    sid = request(client, body=b"a" * 1000, end=False)
    to_server(server, client)
    client.reset_stream(sid, ErrorCodes.CANCEL)
    (reset,) = to_server(server, client)
    assert isinstance(reset, ev.StreamReset)
    assert reset.remote_reset and reset.error_code == ErrorCodes.CANCEL and reset.stream_id == sid
    assert sid not in server.streams
    # DATA the client had in flight: ignored, but its connection window space comes back.
    for _ in range(40):
        assert server.receive_data(frame(conn_mod.DATA, 0, sid, b"b" * 1000)) == []
    assert of(client.receive_data(server.data_to_send()), ev.WindowUpdated)
    with pytest.raises(StreamClosedError):
        server.send_headers(sid, [(":status", "200")])
    with pytest.raises(StreamClosedError):
        server.reset_stream(sid)


def test_server_reset_and_sending_on_closed_streams() -> None:
    server, client = pair()
    sid = request(client, end=False)
    to_server(server, client)
    server.reset_stream(sid, ErrorCodes.NO_ERROR)
    (reset,) = of(to_client(server, client), ev.StreamReset)
    assert reset.error_code == ErrorCodes.NO_ERROR
    for call in (
        lambda: server.send_headers(sid, [(":status", "200")]),
        lambda: server.send_data(sid, b"x"),
        lambda: server.end_stream(sid),
        lambda: server.reset_stream(sid),
        lambda: server.local_flow_control_window(sid),
    ):
        with pytest.raises(StreamClosedError):
            call()
    # Acknowledging data of a gone stream only returns connection window.
    server.acknowledge_received_data(10, sid)
    sid = request(client)
    to_server(server, client)
    server.send_headers(sid, [(":status", "200")])
    server.end_stream(sid)
    assert of(to_client(server, client), ev.StreamEnded)
    assert sid not in server.streams


def test_goaway_from_the_client() -> None:
    server, client = pair()
    request(client)
    to_server(server, client)
    client.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, additional_data=b"bye")
    (terminated,) = to_server(server, client)
    assert isinstance(terminated, ev.ConnectionTerminated)
    assert terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert terminated.last_stream_id == 0 and terminated.additional_data == b"bye"
    assert server.state_machine.state is h2.connection.ConnectionState.CLOSED


# --- errors ---------------------------------------------------------------------------------

SETTINGS_FRAME = frame(conn_mod.SETTINGS, 0, 0)


def open_stream(server: ServerConnection, client: h2.connection.H2Connection, end: bool = False) -> int:
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQUEST, end_stream=end)
    to_server(server, client)
    return sid


CONNECTION_ERRORS: dict[str, tuple[bytes, ErrorCodes]] = {
    "DATA on stream 0": (frame(0, 0, 0, b"x"), ErrorCodes.PROTOCOL_ERROR),
    "DATA on an idle stream": (frame(0, 0, 101, b"x"), ErrorCodes.PROTOCOL_ERROR),
    "HEADERS with an even id": (frame(1, 0x5, 100, b"\x82"), ErrorCodes.PROTOCOL_ERROR),
    "HEADERS on stream 0": (frame(1, 0x5, 0, b"\x82"), ErrorCodes.PROTOCOL_ERROR),
    "frame beyond our frame size": (frame(0, 0, 1, b"x" * 16385), ErrorCodes.FRAME_SIZE_ERROR),
    "PING of 7 octets": (frame(6, 0, 0, b"x" * 7), ErrorCodes.FRAME_SIZE_ERROR),
    "PING on a stream": (frame(6, 0, 1, b"x" * 8), ErrorCodes.PROTOCOL_ERROR),
    "SETTINGS of 5 octets": (frame(4, 0, 0, b"x" * 5), ErrorCodes.FRAME_SIZE_ERROR),
    "SETTINGS ACK with payload": (frame(4, 1, 0, b"x" * 6), ErrorCodes.FRAME_SIZE_ERROR),
    "SETTINGS on a stream": (frame(4, 0, 1), ErrorCodes.PROTOCOL_ERROR),
    "ENABLE_PUSH 2": (frame(4, 0, 0, struct.pack(">HL", 2, 2)), ErrorCodes.PROTOCOL_ERROR),
    "INITIAL_WINDOW_SIZE 2^31": (frame(4, 0, 0, struct.pack(">HL", 4, 2**31)), ErrorCodes.FLOW_CONTROL_ERROR),
    "MAX_FRAME_SIZE too small": (frame(4, 0, 0, struct.pack(">HL", 5, 16383)), ErrorCodes.PROTOCOL_ERROR),
    "MAX_FRAME_SIZE too large": (frame(4, 0, 0, struct.pack(">HL", 5, 2**24)), ErrorCodes.PROTOCOL_ERROR),
    "WINDOW_UPDATE of 0 on the connection": (frame(8, 0, 0, b"\0" * 4), ErrorCodes.PROTOCOL_ERROR),
    "connection window beyond 2^31-1": (
        frame(8, 0, 0, struct.pack(">L", 2**31 - 1)),
        ErrorCodes.FLOW_CONTROL_ERROR,
    ),
    "WINDOW_UPDATE of 3 octets": (frame(8, 0, 0, b"\0" * 3), ErrorCodes.FRAME_SIZE_ERROR),
    "WINDOW_UPDATE on an idle stream": (frame(8, 0, 99, struct.pack(">L", 1)), ErrorCodes.PROTOCOL_ERROR),
    "RST_STREAM on stream 0": (frame(3, 0, 0, b"\0" * 4), ErrorCodes.PROTOCOL_ERROR),
    "RST_STREAM on an idle stream": (frame(3, 0, 99, b"\0" * 4), ErrorCodes.PROTOCOL_ERROR),
    "RST_STREAM of 5 octets": (frame(3, 0, 1, b"\0" * 5), ErrorCodes.FRAME_SIZE_ERROR),
    "PUSH_PROMISE": (frame(5, 0x4, 1, b"\0\0\0\x02\x82"), ErrorCodes.PROTOCOL_ERROR),
    "CONTINUATION without HEADERS": (frame(9, 0x4, 1, b"\x82"), ErrorCodes.PROTOCOL_ERROR),
    "HEADERS interrupted by PING": (
        frame(1, 0, 1, b"\x83") + frame(6, 0, 0, b"x" * 8),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "CONTINUATION of another stream": (
        frame(1, 0, 1, b"\x83") + frame(9, 4, 3, b"\x86"),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "endless CONTINUATION": (frame(1, 0, 1, b"\x83") + frame(9, 0, 1) * 100, ErrorCodes.ENHANCE_YOUR_CALM),
    "header block too large": (
        frame(1, 0, 1, b"\0" * 16384) + frame(9, 0, 1, b"\0" * 16384) * 8,
        ErrorCodes.ENHANCE_YOUR_CALM,
    ),
    "padding as long as the frame": (frame(1, 0x4 | 0x8, 1, b"\x05\x82\x86"), ErrorCodes.PROTOCOL_ERROR),
    "PADDED without pad length": (frame(0, 0x8, 1), ErrorCodes.FRAME_SIZE_ERROR),
    "undecodable header block": (frame(1, 0x5, 1, b"\xff\xff\xff\xff\xff"), ErrorCodes.COMPRESSION_ERROR),
    "GOAWAY on a stream": (frame(7, 0, 1, b"\0" * 8), ErrorCodes.PROTOCOL_ERROR),
    "GOAWAY of 7 octets": (frame(7, 0, 0, b"\0" * 7), ErrorCodes.FRAME_SIZE_ERROR),
    "PRIORITY on stream 0": (frame(2, 0, 0, b"\0" * 5), ErrorCodes.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("case", sorted(CONNECTION_ERRORS))
def test_connection_errors_send_goaway_and_raise(case: str) -> None:
    data, code = CONNECTION_ERRORS[case]
    server, _ = pair()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(data)
    assert info.value.error_code == code
    assert isinstance(info.value, ProtocolError)
    assert goaway_code(server) == code
    assert server.state_machine.state is h2.connection.ConnectionState.CLOSED
    with pytest.raises(ProtocolError):
        server.receive_data(frame(6, 0, 0, b"x" * 8))


def test_bad_preface_and_missing_settings() -> None:
    server = ServerConnection()
    server.initiate_connection()
    server.data_to_send()
    assert server.receive_data(PREFACE[:10]) == []
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(b"GET / HTTP/1.1\r\n\r\n......")
    assert info.value.error_code == ErrorCodes.PROTOCOL_ERROR
    server = ServerConnection()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(PREFACE + frame(6, 0, 0, b"x" * 8))
    assert goaway_code(server) == ErrorCodes.PROTOCOL_ERROR


def test_data_beyond_the_windows_is_a_flow_control_error() -> None:
    server, client = pair(grpclib_windows=False)
    sid = open_stream(server, client)
    chunk = frame(0, 0, sid, b"x" * 16384)
    server.receive_data(chunk * 3 + frame(0, 0, sid, b"x" * 16383))  # exactly the 65535 window
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(frame(0, 0, sid, b"x"))
    assert info.value.error_code == ErrorCodes.FLOW_CONTROL_ERROR
    # The stream window alone: the connection has room, the stream does not.
    server, client = pair(grpclib_windows=False)
    server.increment_flow_control_window(1_000_000)
    sid = open_stream(server, client)
    server.receive_data(chunk * 3 + frame(0, 0, sid, b"x" * 16383))
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(frame(0, 0, sid, b"x"))
    assert info.value.error_code == ErrorCodes.FLOW_CONTROL_ERROR


def test_initial_window_change_overflowing_an_open_stream() -> None:
    server, client = pair()
    sid = open_stream(server, client)
    server.receive_data(frame(8, 0, sid, struct.pack(">L", 2**31 - 1 - 65535)))
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(frame(4, 0, 0, struct.pack(">HL", 4, 65536)))
    assert info.value.error_code == ErrorCodes.FLOW_CONTROL_ERROR


def stream_error(server: ServerConnection, data: bytes) -> tuple[list[ev.Event], Any]:
    """Feed ``data``; return the server's events and the code of the RST_STREAM it answered."""
    events = server.receive_data(data)
    out = server.data_to_send()
    codes = []
    pos = 0
    while pos < len(out):
        high, low, frame_type = struct.unpack_from(">BHB", out, pos)
        if frame_type == conn_mod.RST_STREAM:
            codes.append(ErrorCodes(struct.unpack_from(">L", out, pos + 9)[0]))
        pos += 9 + (high << 16 | low)
    assert len(codes) == 1, f"expected one RST_STREAM, got {codes}"
    return events, codes[0]


def test_stream_errors_reset_the_stream_and_the_connection_lives() -> None:
    server, client = pair()
    cases: list[tuple[str, bool, Any, ErrorCodes, bool]] = [
        # name, stream ended by the client first, frame maker, code, grpclib told (StreamReset)
        ("DATA after END_STREAM", True, lambda s: frame(0, 0, s, b"x"), ErrorCodes.STREAM_CLOSED, True),
        (
            "trailers without END_STREAM",
            False,
            lambda s: frame(1, 0x4, s, b"\x82"),
            ErrorCodes.PROTOCOL_ERROR,
            True,
        ),
        (
            "HEADERS after END_STREAM",
            True,
            lambda s: frame(1, 0x5, s, b"\x82"),
            ErrorCodes.STREAM_CLOSED,
            True,
        ),
        ("WINDOW_UPDATE of 0", False, lambda s: frame(8, 0, s, b"\0" * 4), ErrorCodes.PROTOCOL_ERROR, True),
        (
            "stream window beyond 2^31-1",
            False,
            lambda s: frame(8, 0, s, struct.pack(">L", 2**31 - 1)),
            ErrorCodes.FLOW_CONTROL_ERROR,
            True,
        ),
        (
            "PRIORITY of 4 octets",
            False,
            lambda s: frame(2, 0, s, b"\0" * 4),
            ErrorCodes.FRAME_SIZE_ERROR,
            True,
        ),
        (
            "PRIORITY on itself",
            False,
            lambda s: frame(2, 0, s, struct.pack(">LB", s, 1)),
            ErrorCodes.PROTOCOL_ERROR,
            True,
        ),
    ]
    for name, ended, make, code, told in cases:
        sid = open_stream(server, client, end=ended)
        events, sent = stream_error(server, make(sid))
        assert sent == code, name
        resets = of(events, ev.StreamReset)
        assert bool(resets) == told, name
        if told:
            assert resets[0].error_code == code and not resets[0].remote_reset, name
        assert sid not in server.streams, name
        # More frames for it are ignored now.
        assert server.receive_data(frame(0, 0, sid, b"late")) == []
    # The connection still serves.
    sid = request(client)
    assert of(to_server(server, client), ev.RequestReceived)[0].stream_id == sid


def test_self_dependent_headers_and_data_on_a_forgotten_stream() -> None:
    server, client = pair()
    block = client.encoder.encode(REQUEST)
    payload = struct.pack(">LB", 1, 15) + block
    events, code = stream_error(server, frame(1, 0x4 | 0x20, 1, payload))
    assert code == ErrorCodes.PROTOCOL_ERROR and events == []
    # A stream that ended normally and was forgotten: late DATA is a stream error, not fatal.
    sid = 3
    server.receive_data(frame(1, 0x5, sid, client.encoder.encode(REQUEST)))
    answer(server, sid)
    server.data_to_send()
    events, code = stream_error(server, frame(0, 0, sid, b"late"))
    assert code == ErrorCodes.STREAM_CLOSED and events == []


def test_too_many_streams_are_refused() -> None:
    server, client = pair(max_concurrent_streams=2)
    first, second = open_stream(server, client), open_stream(server, client)
    # h2's client keeps to our limit; break it by hand (its encoder keeps the HPACK state in step).
    block = client.encoder.encode(REQUEST)
    events = server.receive_data(frame(1, 0x4, 5, block) + frame(0, 0x1, 5, b"x" * 100))
    assert events == []  # grpclib never hears of it
    out = server.data_to_send()
    assert frame_types(out)[0] == conn_mod.RST_STREAM
    assert struct.unpack_from(">L", out, 9)[0] == ErrorCodes.REFUSED_STREAM
    assert set(server.streams) == {first, second}
    # Its header block was decoded all the same: the next request's indexed headers still work.
    server.reset_stream(first)
    events = server.receive_data(frame(1, 0x5, 7, client.encoder.encode(REQUEST)))
    assert of(events, ev.RequestReceived)[0].headers == REQUEST


def test_non_ascii_header_resets_only_its_stream() -> None:
    server, client = pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, [*REQUEST, ("x-name", "caf\u00e9")], end_stream=True)
    assert to_server(server, client) == []
    (reset,) = of(to_client(server, client), ev.StreamReset)
    assert reset.error_code == ErrorCodes.PROTOCOL_ERROR
    sid = request(client)
    assert of(to_server(server, client), ev.RequestReceived)[0].headers == REQUEST


def test_unknown_frames_and_priority_are_ignored() -> None:
    server, client = pair()
    sid = open_stream(server, client)
    assert (
        server.receive_data(frame(0xFA, 0xFF, 0, b"whatever") + frame(2, 0, sid, struct.pack(">LB", 0, 9)))
        == []
    )
    assert server.receive_data(frame(2, 0, 77, struct.pack(">LB", 0, 9))) == []  # an idle stream
    assert server.data_to_send() == b""


# --- bounded state and fuzzing ---------------------------------------------------------------


def test_state_stays_bounded() -> None:
    server, client = pair()
    for _ in range(3000):
        sid = open_stream(server, client)
        client.reset_stream(sid)
        to_server(server, client)
    assert server.streams == {}
    assert len(server._recently_reset) <= conn_mod.RESET_MEMORY
    # Input that is not a whole frame waits, but never more than one frame's worth.
    partial = frame(0, 0, 1, b"x" * 16384)[:-1]
    assert server.receive_data(partial) == []
    assert len(server._input) == len(partial) <= 9 + 16384


def test_chunked_input_gives_the_same_events() -> None:
    _, client = pair()
    client.ping(b"12345678")
    sids = [request(client, body=bytes([i]) * 10000) for i in range(3)]
    data = client.data_to_send()
    whole = ServerConnection()
    setup_like_grpclib(whole)
    first = new_client()
    first.initiate_connection()
    preface = first.data_to_send()
    expected = [repr(e) for e in whole.receive_data(preface + data)]
    byte_by_byte = ServerConnection()
    setup_like_grpclib(byte_by_byte)
    got: list[str] = []
    stream = preface + data
    for i in range(0, len(stream), 7):
        got += [repr(e) for e in byte_by_byte.receive_data(stream[i : i + 7])]
    assert got == expected
    assert len([e for e in expected if e.startswith("<RequestReceived")]) == len(sids)


def valid_conversation() -> bytes:
    client = new_client()
    client.initiate_connection()
    client.ping(b"12345678")
    for _ in range(2):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQUEST)
        client.send_data(sid, b"\0\0\0\0\x03abc", end_stream=True)
        client.increment_flow_control_window(8)
    client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    return client.data_to_send()


VALID = valid_conversation()
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_events_or_protocol_error(server: ServerConnection, chunks: list[bytes]) -> None:
    for chunk in chunks:
        try:
            events = server.receive_data(chunk)
        except ProtocolError:
            return
        assert all(isinstance(e, ev.Event) for e in events)
        server.data_to_send()


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_fuzz_random_frames_after_a_valid_preface(chunks: list[bytes]) -> None:
    server = ServerConnection()
    server.initiate_connection()
    server.receive_data(PREFACE + SETTINGS_FRAME)
    only_events_or_protocol_error(server, chunks)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8), st.integers(1, 64)
)
def test_fuzz_mutated_conversation(mutations: list[tuple[int, int]], chunk: int) -> None:
    data = bytearray(VALID)
    for at, value in mutations:
        data[at] = value
    server = ServerConnection()
    server.initiate_connection()
    only_events_or_protocol_error(server, [bytes(data[i : i + chunk]) for i in range(0, len(data), chunk)])


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, 10), st.integers(0, 255), st.integers(0, 9), st.binary(max_size=40)),
        max_size=12,
    )
)
def test_fuzz_well_framed_random_frames(frames: list[tuple[int, int, int, bytes]]) -> None:
    server = ServerConnection()
    server.initiate_connection()
    server.receive_data(VALID)
    only_events_or_protocol_error(server, [frame(t, f, s, p) for t, f, s, p in frames])
