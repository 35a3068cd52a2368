"""SPDY/3.1 codec and connection state, without sockets.

Golden frames are written byte by byte from the SPDY/3 framing layer: control
header ``0x8003 | type | flags:8 length:24``, data header ``stream:31 | flags:8
length:24``. Header blocks in the golden SYN_STREAMs are zlib streams built by
hand as *stored* deflate blocks (zlib header with FDICT, the dictionary's
Adler-32, then ``00 LEN NLEN raw``), so the decoder is checked against the
format rather than against the compressor it shares a library with.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arun.cri.streaming import spdy


def h(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text.replace(" ", ""))


# --- dictionary -------------------------------------------------------------------------------------------
def test_dictionary_is_the_spdy3_dictionary() -> None:
    d = spdy.DICTIONARY
    assert len(d) == 1423
    assert zlib.adler32(d) == 0xE3C6A7C2
    assert d.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert b"\x00\x00\x00\x08HTTP/1.1" in d
    assert d.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


def test_compressed_block_names_the_dictionary_and_inflates_with_it() -> None:
    framer = spdy.Framer()
    wire = framer.encode(spdy.SynReplyFrame(1, (("streamtype", "stdout"),)))
    block = wire[12:]
    cmf, flg = block[0], block[1]
    assert cmf & 0x0F == 8  # deflate
    assert flg & 0x20  # FDICT
    assert (cmf * 256 + flg) % 31 == 0
    assert struct.unpack(">I", block[2:6])[0] == 0xE3C6A7C2
    inflater = zlib.decompressobj(zdict=spdy.DICTIONARY)
    raw = inflater.decompress(block)
    assert raw == h("00000001 0000000a") + b"streamtype" + h("00000006") + b"stdout"
    # a sync flush ends every block: the empty stored block 00 00 ff ff
    assert block.endswith(h("0000ffff"))


# --- golden control and data frames -----------------------------------------------------------------------
GOLDEN = [
    (spdy.DataFrame(1, b"hi", fin=True), "00000001 01000002 6869"),
    (spdy.DataFrame(0x7FFFFFFF, b""), "7fffffff 00000000"),
    (spdy.RstStreamFrame(3, spdy.RstStatus.CANCEL), "80030003 00000008 00000003 00000005"),
    (spdy.PingFrame(2), "80030006 00000004 00000002"),
    (spdy.GoAwayFrame(5, spdy.GoAwayStatus.OK), "80030007 00000008 00000005 00000000"),
    (spdy.GoAwayFrame(0, spdy.GoAwayStatus.PROTOCOL_ERROR), "80030007 00000008 00000000 00000001"),
    (spdy.WindowUpdateFrame(1, 65536), "80030009 00000008 00000001 00010000"),
    (
        spdy.SettingsFrame((spdy.Setting(4, 100, flags=1), spdy.Setting(7, 65536)), clear=True),
        "80030004 01000014 00000002 01000004 00000064 00000007 00010000",
    ),
]


@pytest.mark.parametrize(("frame", "wire"), GOLDEN)
def test_golden_frames_encode(frame: spdy.Frame, wire: str) -> None:
    assert spdy.Framer().encode(frame) == h(wire)


@pytest.mark.parametrize(("frame", "wire"), GOLDEN)
def test_golden_frames_decode(frame: spdy.Frame, wire: str) -> None:
    assert spdy.Framer().feed(h(wire)) == [frame]


def _stored(raw: bytes) -> bytes:
    """A non-final stored deflate block holding ``raw``."""
    return b"\x00" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw


def _block(headers: list[tuple[bytes, bytes]]) -> bytes:
    out = struct.pack(">I", len(headers))
    for name, value in headers:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    return out


# zlib header: CMF 0x78 (deflate, 32K window), FLG 0x20 (FDICT, FLEVEL 0; 0x7820 % 31 == 0), DICTID
ZLIB_HEADER = h("7820 e3c6a7c2")


def test_golden_syn_stream_with_hand_built_header_blocks() -> None:
    first = ZLIB_HEADER + _stored(_block([(b"streamtype", b"error")]))
    second = _stored(_block([(b"streamtype", b"stdin"), (b"port", b"80\x0081")]))
    wire = (
        h("80030001") + struct.pack(">I", 10 + len(first)) + h("00000001 00000000 a0 00") + first
        # FIN | UNIDIRECTIONAL, stream 3, associated to 1, priority 7
        + h("80030001") + struct.pack(">I", (0x03 << 24) | (10 + len(second))) + h("00000003 00000001 e0 00")
        + second
    )  # fmt: skip
    frames = spdy.Framer().feed(wire)
    assert frames == [
        spdy.SynStreamFrame(1, (("streamtype", "error"),), priority=5),
        spdy.SynStreamFrame(
            3,
            (("streamtype", "stdin"), ("port", "80"), ("port", "81")),
            associated_to=1,
            priority=7,
            fin=True,
            unidirectional=True,
        ),
    ]


def test_golden_syn_reply_and_headers() -> None:
    block = ZLIB_HEADER + _stored(_block([]))
    wire = h("80030002") + struct.pack(">I", 4 + len(block)) + h("00000002") + block
    assert spdy.Framer().feed(wire) == [spdy.SynReplyFrame(2, ())]
    block = ZLIB_HEADER + _stored(_block([(b"x-y", b"z")]))
    wire = h("80030008") + struct.pack(">I", (1 << 24) | (4 + len(block))) + h("00000005") + block
    assert spdy.Framer().feed(wire) == [spdy.HeadersFrame(5, (("x-y", "z"),), fin=True)]


def test_wrong_dictionary_id_is_a_protocol_error() -> None:
    block = h("7820 00000001") + _stored(_block([]))
    wire = h("80030002") + struct.pack(">I", 4 + len(block)) + h("00000002") + block
    with pytest.raises(spdy.RemoteProtocolError):
        spdy.Framer().feed(wire)


def test_upper_case_names_are_lowered_and_values_split_on_nul() -> None:
    block = ZLIB_HEADER + _stored(_block([(b"StreamType", b"a\x00b")]))
    wire = h("80030002") + struct.pack(">I", 4 + len(block)) + h("00000002") + block
    assert spdy.Framer().feed(wire) == [spdy.SynReplyFrame(2, (("streamtype", "a"), ("streamtype", "b")))]


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        ("80020006 00000004 00000001", "version 2"),
        ("80030003 00000004 00000001", "short RST_STREAM"),
        ("80030003 00000008 00000001 00000000", "RST status 0"),
        ("80030006 00000004 00000000", "ping id 0"),
        ("80030007 00000004 00000000", "short GOAWAY"),
        ("80030004 00000008 00000002 00000000", "SETTINGS count past the payload"),
        ("00000000 00000001 00", "data on stream 0"),
    ],
)
def test_malformed_frames(wire: str, why: str) -> None:
    with pytest.raises(spdy.RemoteProtocolError):
        spdy.Framer().feed(h(wire))


def test_frame_length_limit() -> None:
    framer = spdy.Framer(max_frame_length=16)
    with pytest.raises(spdy.RemoteProtocolError):
        framer.feed(h("00000001 00000011"))


def test_header_block_limits() -> None:
    too_many = ZLIB_HEADER + _stored(struct.pack(">I", spdy.MAX_HEADER_COUNT + 1))
    wire = h("80030002") + struct.pack(">I", 4 + len(too_many)) + h("00000002") + too_many
    with pytest.raises(spdy.RemoteProtocolError):
        spdy.Framer().feed(wire)
    trailing = ZLIB_HEADER + _stored(_block([]) + b"junk")
    wire = h("80030002") + struct.pack(">I", 4 + len(trailing)) + h("00000002") + trailing
    with pytest.raises(spdy.RemoteProtocolError):
        spdy.Framer().feed(wire)


def test_unknown_control_frame_round_trips() -> None:
    frame = spdy.UnknownControlFrame(0x42, 0x7, b"abc")
    wire = spdy.Framer().encode(frame)
    assert wire == h("80030042 07000003 616263")
    assert spdy.Framer().feed(wire) == [frame]


def test_local_frame_errors() -> None:
    framer = spdy.Framer()
    for bad in (
        spdy.DataFrame(0, b""),
        spdy.RstStreamFrame(1, 0),
        spdy.PingFrame(0),
        spdy.SynStreamFrame(1, (), priority=8),
        spdy.WindowUpdateFrame(1, 0),
    ):
        with pytest.raises(spdy.LocalProtocolError):
            framer.encode(bad)


# --- round trips and chunking -----------------------------------------------------------------------------
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
values = st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=20)
headers = st.lists(st.tuples(names, values), max_size=5).map(
    # one value per name keeps the decoded order predictable
    lambda items: tuple(dict(items).items())
)
stream_ids = st.integers(1, spdy.MAX_STREAM_ID)
frames = st.one_of(
    st.builds(spdy.DataFrame, stream_ids, st.binary(max_size=300), st.booleans()),
    st.builds(
        spdy.SynStreamFrame,
        stream_ids,
        headers,
        associated_to=st.integers(0, spdy.MAX_STREAM_ID),
        priority=st.integers(0, 7),
        slot=st.integers(0, 255),
        fin=st.booleans(),
        unidirectional=st.booleans(),
    ),
    st.builds(spdy.SynReplyFrame, stream_ids, headers, fin=st.booleans()),
    st.builds(spdy.HeadersFrame, stream_ids, headers, fin=st.booleans()),
    st.builds(spdy.RstStreamFrame, stream_ids, st.integers(1, 11)),
    st.builds(spdy.PingFrame, st.integers(1, 0xFFFFFFFF)),
    st.builds(spdy.GoAwayFrame, st.integers(0, spdy.MAX_STREAM_ID), st.integers(0, 11)),
    st.builds(spdy.WindowUpdateFrame, st.integers(0, spdy.MAX_STREAM_ID), st.integers(1, 0x7FFFFFFF)),
    st.builds(
        spdy.SettingsFrame,
        st.lists(
            st.builds(spdy.Setting, st.integers(1, 0xFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 3)),
            max_size=4,
        ).map(tuple),
        clear=st.booleans(),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(frames, max_size=12), st.data())
def test_any_chunking_gives_the_same_frames(sent: list[spdy.Frame], data: st.DataObject) -> None:
    encoder = spdy.Framer()
    wire = b"".join(encoder.encode(f) for f in sent)
    assert spdy.Framer().feed(wire) == sent
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    decoder = spdy.Framer()
    got: list[spdy.Frame] = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        got += decoder.feed(wire[prev:cut])
        prev = cut
    assert got == sent
    assert decoder.buffered == 0


def test_iter_frames_reports_a_partial_frame() -> None:
    with pytest.raises(spdy.RemoteProtocolError):
        list(spdy.iter_frames(h("00000001 00000005 6869")))


# --- connection state ---------------------------------------------------------------------------------------
class Pair:
    """A client and a server Connection wired in memory."""

    def __init__(self) -> None:
        self.client = spdy.Connection(spdy.Role.CLIENT)
        self.server = spdy.Connection(spdy.Role.SERVER)

    def to_server(self) -> list[spdy.Event]:
        return self.server.receive_data(self.client.data_to_send())

    def to_client(self) -> list[spdy.Event]:
        return self.client.receive_data(self.server.data_to_send())


def test_stream_lifecycle() -> None:
    p = Pair()
    sid = p.client.open_stream({"streamType": "stdout"})
    assert sid == 1
    assert p.to_server() == [spdy.StreamOpened(1, (("streamtype", "stdout"),))]
    with pytest.raises(spdy.LocalProtocolError):
        p.server.send_data(1, b"early")  # not replied yet
    p.server.reply(1)
    p.server.send_data(1, b"hello")
    assert p.to_client() == [spdy.StreamReplied(1, ()), spdy.DataReceived(1, b"hello")]
    p.server.end_stream(1)
    assert p.to_client() == [spdy.StreamEnded(1)]
    assert p.client.is_open(1)  # the client has not finished its side
    with pytest.raises(spdy.LocalProtocolError):
        p.server.send_data(1, b"late")
    p.client.send_data(1, b"bye", fin=True)
    assert p.to_server() == [spdy.DataReceived(1, b"bye", fin=True), spdy.StreamEnded(1)]
    assert not p.client.is_open(1)
    assert not p.server.is_open(1)
    assert p.client.open_stream({}) == 3
    assert p.server.open_stream({}) == 2


def test_large_writes_are_split() -> None:
    p = Pair()
    p.client.open_stream({})
    p.to_server()
    p.server.reply(1)
    p.server.send_data(1, b"x" * (spdy.MAX_DATA_CHUNK * 2 + 5), fin=True)
    events = p.to_client()
    data = [e for e in events if isinstance(e, spdy.DataReceived)]
    assert [len(e.data) for e in data] == [spdy.MAX_DATA_CHUNK, spdy.MAX_DATA_CHUNK, 5]
    assert [e.fin for e in data] == [False, False, True]
    assert events[-1] == spdy.StreamEnded(1)


def test_stream_ids_must_increase_with_the_peer_parity() -> None:
    server = spdy.Connection(spdy.Role.SERVER)
    raw = spdy.Framer()
    assert server.receive_data(raw.encode(spdy.SynStreamFrame(5, ()))) == [spdy.StreamOpened(5, ())]
    assert server.receive_data(raw.encode(spdy.SynStreamFrame(3, ()))) == []
    assert server.receive_data(raw.encode(spdy.SynStreamFrame(6, ()))) == []  # even: the server's own parity
    out = spdy.iter_frames(server.data_to_send())
    assert list(out) == [
        spdy.RstStreamFrame(3, spdy.RstStatus.PROTOCOL_ERROR),
        spdy.RstStreamFrame(6, spdy.RstStatus.PROTOCOL_ERROR),
    ]


def test_data_on_streams_that_do_not_exist() -> None:
    server = spdy.Connection(spdy.Role.SERVER)
    raw = spdy.Framer()
    server.receive_data(raw.encode(spdy.SynStreamFrame(1, ())))
    server.reset_stream(1)
    server.data_to_send()
    # stream 1 existed: late data is dropped without a word
    assert server.receive_data(raw.encode(spdy.DataFrame(1, b"late"))) == []
    assert server.data_to_send() == b""
    # stream 9 was never opened
    assert server.receive_data(raw.encode(spdy.DataFrame(9, b"?"))) == []
    assert list(spdy.iter_frames(server.data_to_send())) == [
        spdy.RstStreamFrame(9, spdy.RstStatus.INVALID_STREAM)
    ]


def test_data_after_fin_resets_the_stream() -> None:
    server = spdy.Connection(spdy.Role.SERVER)
    raw = spdy.Framer()
    server.receive_data(raw.encode(spdy.SynStreamFrame(1, (), fin=True)))
    events = server.receive_data(raw.encode(spdy.DataFrame(1, b"x")))
    assert events == [spdy.StreamReset(1, spdy.RstStatus.STREAM_ALREADY_CLOSED, remote=False)]
    assert list(spdy.iter_frames(server.data_to_send())) == [
        spdy.RstStreamFrame(1, spdy.RstStatus.STREAM_ALREADY_CLOSED)
    ]
    assert not server.is_open(1)


def test_peer_reset() -> None:
    p = Pair()
    p.client.open_stream({})
    p.to_server()
    p.client.reset_stream(1, spdy.RstStatus.CANCEL)
    assert p.to_server() == [spdy.StreamReset(1, spdy.RstStatus.CANCEL)]
    assert not p.server.is_open(1)
    p.client.reset_stream(1)  # already gone: nothing queued
    assert p.client.data_to_send() == b""


def test_unidirectional_stream_is_closed_for_the_receiver() -> None:
    server = spdy.Connection(spdy.Role.SERVER)
    server.receive_data(spdy.Framer().encode(spdy.SynStreamFrame(1, (), unidirectional=True)))
    assert server.local_closed(1)
    with pytest.raises(spdy.LocalProtocolError):
        server.send_data(1, b"x")


def test_duplicate_reply_resets() -> None:
    client = spdy.Connection(spdy.Role.CLIENT)
    client.open_stream({})
    client.data_to_send()
    raw = spdy.Framer()
    assert client.receive_data(raw.encode(spdy.SynReplyFrame(1, ()))) == [spdy.StreamReplied(1, ())]
    events = client.receive_data(raw.encode(spdy.SynReplyFrame(1, ())))
    assert events == [spdy.StreamReset(1, spdy.RstStatus.STREAM_IN_USE, remote=False)]


def test_pings_are_echoed_and_acked() -> None:
    p = Pair()
    assert p.client.ping() == 1
    assert p.client.ping() == 3
    assert p.to_server() == [spdy.PingReceived(1), spdy.PingReceived(3)]
    assert p.to_client() == [spdy.PingAcked(1), spdy.PingAcked(3)]
    assert p.server.ping() == 2
    assert p.to_client() == [spdy.PingReceived(2)]
    assert p.to_server() == [spdy.PingAcked(2)]


def test_goaway() -> None:
    p = Pair()
    p.client.open_stream({})
    p.to_server()
    p.server.go_away()
    p.server.go_away()  # once only
    assert p.to_client() == [spdy.GoAwayReceived(1, spdy.GoAwayStatus.OK)]
    with pytest.raises(spdy.LocalProtocolError):
        p.client.open_stream({})
    # a stream opened after the server's GOAWAY is ignored
    raw = spdy.Connection(spdy.Role.CLIENT)
    raw._state.next_local_id = 3
    raw._framer = p.client._framer
    raw.open_stream({})
    assert p.server.receive_data(raw.data_to_send()) == []
    assert p.server.data_to_send() == b""


def test_settings_and_window_updates_are_reported_not_enforced() -> None:
    p = Pair()
    p.client.send_settings([spdy.Setting(7, 1)])
    p.client.send_window_update(0, 10)
    assert p.to_server() == [
        spdy.SettingsReceived((spdy.Setting(7, 1),)),
        spdy.WindowUpdateReceived(0, 10),
    ]
    sid = p.server.open_stream({})
    p.server.send_data(sid, b"y" * 200_000)  # far past any window: no flow control
    p.to_client()
    assert p.server.data_to_send() == b""


def test_bad_version_queues_goaway() -> None:
    server = spdy.Connection(spdy.Role.SERVER)
    with pytest.raises(spdy.RemoteProtocolError):
        server.receive_data(h("80020006 00000004 00000001"))
    assert list(spdy.iter_frames(server.data_to_send())) == [
        spdy.GoAwayFrame(0, spdy.GoAwayStatus.PROTOCOL_ERROR)
    ]


def test_unknown_control_frames_are_ignored() -> None:
    server = spdy.Connection(spdy.Role.SERVER)
    assert server.receive_data(h("8003000a 00000002 0000")) == []


def test_eof() -> None:
    server = spdy.Connection(spdy.Role.SERVER)
    assert server.receive_data(b"") == [spdy.ConnectionClosed()]
    assert server.receive_data(b"") == []


def test_nothing_is_sent_unprompted() -> None:
    """A Go client reads the 101 response through a buffer; the server must not speak first."""
    assert spdy.Connection(spdy.Role.SERVER).data_to_send() == b""
