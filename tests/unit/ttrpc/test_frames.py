"""Framing: the 10-byte big-endian header and the incremental decoder."""

from __future__ import annotations

import pytest

from arun.ttrpc.frames import (
    HEADER,
    HEADER_SIZE,
    MAX_DATA,
    Flags,
    Frame,
    FrameDecoder,
    MessageType,
    Oversized,
    encode_frame,
)


def test_header_layout_is_big_endian_length_stream_type_flags() -> None:
    # The facts' own illustration: a unary request with a 20-byte body on stream 1.
    assert HEADER_SIZE == 10
    assert HEADER.format == ">IIBB"
    assert encode_frame(1, MessageType.REQUEST, 0, b"x" * 20)[:10] == bytes.fromhex("00000014 00000001 01 00")
    # Multi-byte fields are big-endian: length 0x01020304, stream 0x0a0b0c0d, Data, flags 0x05.
    assert encode_frame(0x0A0B0C0D, MessageType.DATA, 0x05, b"")[:10] == bytes.fromhex(
        "00000000 0a0b0c0d 03 05"
    )
    assert HEADER.pack(0x01020304, 7, 2, 0) == bytes.fromhex("01020304 00000007 02 00")


def test_constants() -> None:
    assert MAX_DATA == 4 * 1024 * 1024
    assert (MessageType.REQUEST, MessageType.RESPONSE, MessageType.DATA) == (1, 2, 3)
    assert (Flags.REMOTE_CLOSED, Flags.REMOTE_OPEN, Flags.NO_DATA) == (1, 2, 4)


def test_decoder_yields_frames_with_their_data() -> None:
    wire = bytes.fromhex("00000003 00000001 01 00 616263") + bytes.fromhex("00000000 00000003 03 05")
    assert FrameDecoder().feed(wire) == [Frame(1, 1, 0, b"abc"), Frame(3, 3, 5, b"")]


def test_decoder_byte_by_byte() -> None:
    wire = encode_frame(5, 2, 0, b"hello") + encode_frame(7, 3, 1, b"")
    dec = FrameDecoder()
    out: list[Frame | Oversized] = []
    for i in range(len(wire)):
        out += dec.feed(wire[i : i + 1])
        if i < len(wire) - 1:
            assert dec.pending or out
    assert out == [Frame(5, 2, 0, b"hello"), Frame(7, 3, 1, b"")]
    assert dec.pending == 0


def test_unknown_type_is_still_a_frame() -> None:
    assert FrameDecoder().feed(encode_frame(9, 0x7F, 0xFF, b"z")) == [Frame(9, 0x7F, 0xFF, b"z")]


def test_exactly_max_data_is_a_frame() -> None:
    body = b"\0" * MAX_DATA
    frames = FrameDecoder().feed(encode_frame(1, 1, 0, body))
    assert len(frames) == 1 and isinstance(frames[0], Frame) and len(frames[0].data) == MAX_DATA


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20, 10 << 20])
def test_oversized_frame_is_skipped_and_reported_after_its_bytes(chunk: int) -> None:
    over = MAX_DATA + 1
    wire = HEADER.pack(over, 3, 1, 0) + b"\xff" * over + encode_frame(5, 1, 0, b"next")
    dec = FrameDecoder()
    out: list[Frame | Oversized] = []
    for i in range(0, len(wire), chunk):
        got = dec.feed(wire[i : i + chunk])
        if i + chunk < HEADER_SIZE + over:
            assert got == []  # the marker comes once the skipped bytes have gone by
        out += got
    assert out == [Oversized(3, 1, 0, over), Frame(5, 1, 0, b"next")]
    assert dec.pending == 0


def test_oversized_body_is_never_buffered() -> None:
    dec = FrameDecoder()
    dec.feed(HEADER.pack(0xFFFFFFFF, 1, 1, 0))
    dec.feed(b"\0" * (1 << 20))
    assert len(dec._buf) == 0  # skipping, not holding
    assert dec.pending == 0xFFFFFFFF - (1 << 20)


def test_large_frame_in_small_chunks_is_not_copied_per_chunk() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    wire = encode_frame(1, 3, 0, body)
    dec = FrameDecoder()
    out: list[Frame | Oversized] = []
    for i in range(0, len(wire), 1000):
        out += dec.feed(wire[i : i + 1000])
    assert out == [Frame(1, 3, 0, body)]


def test_pending_reports_a_cut_frame() -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(1, 1, 0, b"abcdef")[:12])
    assert dec.pending == 12
