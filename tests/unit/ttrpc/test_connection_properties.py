"""Properties of the sans-IO connection: chunking never matters, garbage never breaks it."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arun.api.ttrpc import request_pb2
from arun.ttrpc.connection import Connection, Role
from arun.ttrpc.errors import LocalProtocolError
from arun.ttrpc.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StreamFailed,
)
from arun.ttrpc.frames import HEADER, MAX_DATA, FrameDecoder, encode_frame

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

stream_ids = st.one_of(st.integers(0, 12), st.integers(0, 0xFFFFFFFF))
small_data = st.binary(max_size=40)

# Frames as a peer might send them: any id, type, flags; bodies that are sometimes valid envelopes.
valid_request = st.builds(
    lambda s, m, p, t, md: request_pb2.Request(
        service=s,
        method=m,
        payload=p,
        timeout_nano=t,
        metadata=[request_pb2.KeyValue(key=k, value=v) for k, v in md],
    ).SerializeToString(),
    st.text(max_size=8),
    st.text(max_size=8),
    small_data,
    st.integers(-(2**63), 2**63 - 1),
    st.lists(st.tuples(st.text(max_size=4), st.text(max_size=4)), max_size=3),
)
valid_response = st.builds(
    lambda code, msg, p: request_pb2.Response(
        status={"code": code, "message": msg}, payload=p
    ).SerializeToString(),
    st.integers(0, 16),
    st.text(max_size=8),
    small_data,
)
frame = st.builds(
    encode_frame,
    stream_ids,
    st.sampled_from([1, 2, 3, 0, 4, 255]),
    st.integers(0, 255),
    st.one_of(small_data, valid_request, valid_response),
)
oversized = st.builds(
    lambda sid, t: HEADER.pack(MAX_DATA + 1, sid, t, 0) + bytes(MAX_DATA + 1), stream_ids, st.integers(1, 3)
)


@st.composite
def byte_streams(draw: st.DrawFn, allow_oversized: bool = False) -> bytes:
    parts = draw(st.lists(frame, max_size=12))
    if allow_oversized and draw(st.integers(0, 9)) == 0:
        parts.insert(draw(st.integers(0, len(parts))), draw(oversized))
    return b"".join(parts)


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=20))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def client_with_open_streams() -> Connection:
    c = Connection(Role.CLIENT)
    c.send_request("s", "unary")
    c.send_request("s", "server", server_streaming=True)
    c.send_request("s", "client", client_streaming=True)
    c.send_request("s", "bidi", client_streaming=True, server_streaming=True)
    c.data_to_send()
    return c


def feed_all(conn: Connection, chunks: list[bytes]) -> tuple[list[Event], bytes]:
    events: list[Event] = []
    out = []
    for chunk in chunks:
        if not chunk:
            continue  # b"" would mean end of input
        events += conn.receive_data(chunk)
        out.append(conn.data_to_send())
    events += conn.receive_data(b"")
    return events, b"".join(out)


def new(role: Role) -> Connection:
    return Connection(role) if role is Role.SERVER else client_with_open_streams()


@SETTINGS
@given(st.data(), st.sampled_from(list(Role)))
def test_any_chunking_gives_identical_events_and_output(data: st.DataObject, role: Role) -> None:
    wire = data.draw(byte_streams(allow_oversized=True))
    whole_events, whole_out = feed_all(new(role), [wire] if wire else [])
    chunks = data.draw(chunkings(wire))
    events, out = feed_all(new(role), chunks)
    assert events == whole_events
    assert out == whole_out


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_realistic_client_session_survives_any_chunking(data: st.DataObject) -> None:
    client = Connection(Role.CLIENT)
    kinds = data.draw(
        st.lists(st.tuples(st.booleans(), st.booleans(), st.lists(small_data, max_size=3)), max_size=6)
    )
    for cs, ss, msgs in kinds:
        sid = client.send_request(
            "svc", "m", b"p", client_streaming=cs, server_streaming=ss, metadata=[("k", "v")]
        )
        if cs:
            for m in msgs:
                client.send_data(sid, m)
            client.end_stream(sid)
    wire = client.data_to_send()
    whole, _ = feed_all(Connection(Role.SERVER), [wire])
    assert not any(isinstance(e, StreamFailed) for e in whole)
    assert sum(isinstance(e, RequestReceived) for e in whole) == len(kinds)
    chunked, _ = feed_all(Connection(Role.SERVER), data.draw(chunkings(wire)))
    assert chunked == whole


EVENT_TYPES = (RequestReceived, DataReceived, ResponseReceived, StreamFailed, ConnectionClosed)


@SETTINGS
@given(st.one_of(st.binary(max_size=400), byte_streams()), st.sampled_from(list(Role)), st.data())
def test_garbage_yields_only_protocol_events(garbage: bytes, role: Role, data: st.DataObject) -> None:
    conn = new(role)
    events, out = feed_all(conn, data.draw(chunkings(garbage)))
    assert all(isinstance(e, EVENT_TYPES) for e in events)
    assert isinstance(events[-1], ConnectionClosed)
    assert conn.open_streams == 0
    # The only thing a server ever answers garbage with is well-formed error Responses.
    frames = FrameDecoder().feed(out)
    assert b"".join(encode_frame(*f) for f in frames) == out  # type: ignore[arg-type]
    for f in frames:
        assert f.type == 2 and f.flags == 0
        resp = request_pb2.Response.FromString(f.data)  # type: ignore[union-attr]
        assert resp.status.code != 0
    if role is Role.CLIENT:
        assert out == b""


@settings(max_examples=50, deadline=None)
@given(st.integers(MAX_DATA + 1, 0xFFFFFFFF), st.binary(max_size=64))
def test_huge_announced_lengths_are_skipped_without_buffering(length: int, tail: bytes) -> None:
    conn = Connection(Role.SERVER)
    assert conn.receive_data(HEADER.pack(length, 1, 1, 0) + tail) == []
    assert conn._decoder._buf == bytearray()
    assert conn.receive_data(b"")[-1] == ConnectionClosed(
        f"connection closed in a frame ({length - len(tail)} bytes)"
    )


def test_receive_after_eof_is_a_local_error() -> None:
    conn = Connection(Role.SERVER)
    conn.receive_data(b"")
    try:
        conn.receive_data(b"\0")
    except LocalProtocolError:
        pass
    else:  # pragma: no cover
        raise AssertionError("receive_data after EOF must raise")
