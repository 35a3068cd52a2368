from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arun.server.http2.hpack import (
    HUFFMAN_LENGTHS,
    STATIC_TABLE,
    Decoder,
    Encoder,
    HPACKError,
    encode_integer,
    huffman_codes,
    huffman_decode,
)

Fields = list[tuple[bytes, bytes]]


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def sized(fields: Fields) -> list[tuple[bytes, bytes, int]]:
    return [(n, v, len(n) + len(v) + 32) for n, v in fields]


# RFC 7541 Appendix C.3 / C.4: three requests on one connection, 4096-byte table.
REQUESTS: list[Fields] = [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")],
    [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"www.example.com"),
        (b"cache-control", b"no-cache"),
    ],
    [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/index.html"),
        (b":authority", b"www.example.com"),
        (b"custom-key", b"custom-value"),
    ],
]
REQUEST_TABLES: list[Fields] = [
    [(b":authority", b"www.example.com")],
    [(b"cache-control", b"no-cache"), (b":authority", b"www.example.com")],
    [(b"custom-key", b"custom-value"), (b"cache-control", b"no-cache"), (b":authority", b"www.example.com")],
]
REQUEST_TABLE_SIZES = [57, 110, 164]
C3 = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4 = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]

# RFC 7541 Appendix C.5 / C.6: three responses, a 256-byte table, so entries get evicted.
DATE1 = b"Mon, 21 Oct 2013 20:13:21 GMT"
DATE2 = b"Mon, 21 Oct 2013 20:13:22 GMT"
URL = b"https://www.example.com"
COOKIE = b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
RESPONSES: list[Fields] = [
    [(b":status", b"302"), (b"cache-control", b"private"), (b"date", DATE1), (b"location", URL)],
    [(b":status", b"307"), (b"cache-control", b"private"), (b"date", DATE1), (b"location", URL)],
    [
        (b":status", b"200"),
        (b"cache-control", b"private"),
        (b"date", DATE2),
        (b"location", URL),
        (b"content-encoding", b"gzip"),
        (b"set-cookie", COOKIE),
    ],
]
RESPONSE_TABLES: list[Fields] = [
    [(b"location", URL), (b"date", DATE1), (b"cache-control", b"private"), (b":status", b"302")],
    [(b":status", b"307"), (b"location", URL), (b"date", DATE1), (b"cache-control", b"private")],
    [(b"set-cookie", COOKIE), (b"content-encoding", b"gzip"), (b"date", DATE2)],
]
RESPONSE_TABLE_SIZES = [222, 222, 215]
C5 = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32"
    "3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970"
    "7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61"
    "6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
]
C6 = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad"
    "1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2"
    "e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
]


@pytest.mark.parametrize(
    ("block", "fields", "table"),
    [
        # C.2.1 literal with indexing, C.2.2 without indexing, C.2.3 never indexed, C.2.4 indexed.
        (
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            [(b"custom-key", b"custom-header")],
            [(b"custom-key", b"custom-header")],
        ),
        ("040c 2f73 616d 706c 652f 7061 7468", [(b":path", b"/sample/path")], []),
        ("1008 7061 7373 776f 7264 0673 6563 7265 74", [(b"password", b"secret")], []),
        ("82", [(b":method", b"GET")], []),
    ],
)
def test_rfc_c2_single_representations(block: str, fields: Fields, table: Fields) -> None:
    decoder = Decoder()
    assert decoder.decode(unhex(block)) == fields
    assert decoder.dynamic_table == table
    assert decoder.table_size == sum(s for *_, s in sized(table))


@pytest.mark.parametrize("blocks", [C3, C4], ids=["C.3-plain", "C.4-huffman"])
def test_rfc_c3_c4_requests_share_the_dynamic_table(blocks: list[str]) -> None:
    decoder = Decoder()
    for block, fields, table, size in zip(blocks, REQUESTS, REQUEST_TABLES, REQUEST_TABLE_SIZES, strict=True):
        assert decoder.decode(unhex(block)) == fields
        assert decoder.dynamic_table == table
        assert decoder.table_size == size == sum(s for *_, s in sized(table))


@pytest.mark.parametrize("blocks", [C5, C6], ids=["C.5-plain", "C.6-huffman"])
def test_rfc_c5_c6_responses_evict_from_a_256_byte_table(blocks: list[str]) -> None:
    decoder = Decoder(max_table_size=256)
    for block, fields, table, size in zip(
        blocks, RESPONSES, RESPONSE_TABLES, RESPONSE_TABLE_SIZES, strict=True
    ):
        assert decoder.decode(unhex(block)) == fields
        assert decoder.dynamic_table == table
        assert decoder.table_size == size


def test_static_table_and_huffman_code_match_the_hpack_library() -> None:
    reference = hpack.Decoder()
    for index, field in enumerate(STATIC_TABLE, 1):
        assert reference.decode(bytes((0x80 | index,)), raw=True) == [field]
    # The canonical code built from the lengths decodes what the library's Huffman encoder wrote.
    codes = huffman_codes()
    assert codes[256] == (1 << 30) - 1  # EOS: thirty one-bits (RFC 7541 Appendix B)
    assert len(HUFFMAN_LENGTHS) == 257
    every_byte = bytes(range(256))
    block = hpack.Encoder().encode([(b"x", every_byte)], huffman=True)
    assert Decoder().decode(block) == [(b"x", every_byte)]


def test_huffman_decode_of_each_symbol_with_padding() -> None:
    codes = huffman_codes()
    for sym in range(256):
        length = HUFFMAN_LENGTHS[sym]
        pad = -length % 8
        packed = ((codes[sym] << pad) | ((1 << pad) - 1)).to_bytes((length + pad) // 8, "big")
        assert huffman_decode(packed) == bytes((sym,))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x1f\xff", id="padding-longer-than-7-bits"),  # 'a' then 11 one-bits
        pytest.param(b"\x18", id="padding-not-all-ones"),  # 'a' then 000
        pytest.param(b"\xff\xff\xff\xfc", id="eos-in-string"),  # EOS (30 ones) then 00
        pytest.param(b"\xff\xff\xff\xff", id="eos-then-padding"),
        pytest.param(b"\xff", id="only-padding-8-bits"),
    ],
)
def test_bad_huffman_strings_raise(data: bytes) -> None:
    with pytest.raises(HPACKError):
        huffman_decode(data)
    block = b"\x00" + bytes((0x80 | len(data),)) + data + b"\x01v"
    with pytest.raises(HPACKError):
        Decoder().decode(block)


def test_empty_huffman_string_is_empty() -> None:
    assert huffman_decode(b"") == b""
    assert Decoder().decode(b"\x00\x81\x1f\x80") == [(b"a", b"")]


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b"\xff", id="truncated-integer"),
        pytest.param(b"\xff\x80\x80", id="truncated-integer-continuation"),
        pytest.param(b"\xff" + b"\x80" * 6 + b"\x01", id="over-long-integer"),
        pytest.param(b"\x80", id="index-zero"),
        pytest.param(b"\xbe", id="index-past-empty-dynamic-table"),
        pytest.param(b"\xff\x80\x01", id="index-far-past-the-tables"),
        pytest.param(b"\x7e\x01v", id="literal-name-index-past-the-tables"),
        pytest.param(b"\x0f\x30\x01v", id="literal-without-indexing-name-index-past-the-tables"),
        pytest.param(b"\x00", id="literal-missing-name"),
        pytest.param(b"\x00\x01a", id="literal-missing-value"),
        pytest.param(b"\x00\x05abc", id="string-past-end"),
        pytest.param(b"\x04\x7f\xff\xff\xff\x0fa", id="huge-string-length"),
        pytest.param(b"\x82\x20", id="size-update-after-a-field"),
        pytest.param(encode_integer(4097, 5, 0x20), id="size-update-above-allowed"),
    ],
)
def test_malformed_blocks_raise_hpack_error(block: bytes) -> None:
    with pytest.raises(HPACKError):
        Decoder().decode(block)


def test_header_list_size_limit() -> None:
    fields = [(b"x-a", b"v" * 40), (b"x-b", b"w" * 40)]  # 75 + 75 bytes by RFC 7540's count
    block = Encoder().encode(fields)
    assert Decoder(max_header_list_size=150).decode(block) == fields
    with pytest.raises(HPACKError):
        Decoder(max_header_list_size=149).decode(block)


def test_size_updates_at_block_start_resize_and_evict() -> None:
    decoder = Decoder()
    decoder.decode(unhex(C3[0]) + b"")
    decoder.decode(unhex(C3[1]))
    assert decoder.table_size == 110
    # Two updates in a row (the smallest then the final one, RFC 7541 4.2), then a field.
    block = encode_integer(60, 5, 0x20) + encode_integer(4096, 5, 0x20) + b"\x82"
    assert decoder.decode(block) == [(b":method", b"GET")]
    assert decoder.dynamic_table == [(b"cache-control", b"no-cache")]
    assert decoder.max_table_size == 4096
    assert decoder.decode(b"\x20") == []
    assert decoder.dynamic_table == []
    assert decoder.table_size == 0
    # An update that empties the table, then an index that pointed into it before.
    decoder.decode(encode_integer(4096, 5, 0x20) + b"\x40\x01a\x01b")
    with pytest.raises(HPACKError):
        decoder.decode(b"\x20\xbe")
    # An entry larger than the whole table empties it and is not an error (RFC 7541 4.4).
    decoder.decode(encode_integer(40, 5, 0x20))
    assert decoder.decode(b"\x40\x01a\x01b") == [(b"a", b"b")]
    assert decoder.dynamic_table == [(b"a", b"b")]
    assert decoder.decode(b"\x40\x01c\x08" + b"d" * 8) == [(b"c", b"d" * 8)]
    assert decoder.dynamic_table == []


def test_lowering_the_allowed_size_requires_an_update_at_the_next_block() -> None:
    decoder = Decoder()
    decoder.max_allowed_table_size = 100
    assert decoder.max_allowed_table_size == 100
    with pytest.raises(HPACKError):
        decoder.decode(b"\x82")
    with pytest.raises(HPACKError):
        decoder.decode(encode_integer(101, 5, 0x20) + b"\x82")
    assert decoder.decode(encode_integer(100, 5, 0x20) + b"\x82") == [(b":method", b"GET")]
    assert decoder.decode(b"\x82") == [(b":method", b"GET")]
    # Raising the limit asks for nothing; the peer may grow its table up to it when it wants.
    decoder.max_allowed_table_size = 8192
    assert decoder.decode(b"\x82") == [(b":method", b"GET")]
    assert decoder.decode(encode_integer(8192, 5, 0x20)) == []


def test_a_repeated_block_follows_the_table() -> None:
    decoder = Decoder()
    decoder.decode(b"\x40\x01a\x01b")  # a: b at 62
    assert decoder.decode(b"\x82\xbe") == [(b":method", b"GET"), (b"a", b"b")]
    fields = decoder.decode(b"\x82\xbe")  # remembered now
    assert fields == [(b":method", b"GET"), (b"a", b"b")]
    fields.append((b"x", b"y"))  # the caller owns what it gets
    assert decoder.decode(b"\x82\xbe") == [(b":method", b"GET"), (b"a", b"b")]
    decoder.decode(b"\x40\x01c\x01d")  # c: d at 62, a: b at 63
    assert decoder.decode(b"\x82\xbe") == [(b":method", b"GET"), (b"c", b"d")]
    decoder.decode(b"\x00\x01e\x01f")  # without indexing: the table is as it was
    assert decoder.decode(b"\x82\xbe") == [(b":method", b"GET"), (b"c", b"d")]
    decoder.max_header_list_size = 70
    with pytest.raises(HPACKError):
        decoder.decode(b"\x82\xbe")
    decoder.max_header_list_size = 65536
    assert decoder.decode(b"\x82\xbe") == [(b":method", b"GET"), (b"c", b"d")]
    decoder.max_allowed_table_size = 100
    with pytest.raises(HPACKError):
        decoder.decode(b"\x82\xbe")  # the size update the lower limit requires is missing
    assert decoder.decode(b"\x3f\x01") == []  # size 32: c: d (34) is evicted
    with pytest.raises(HPACKError):
        decoder.decode(b"\x82\xbe")


def test_memoryview_and_bytearray_blocks() -> None:
    block = unhex(C3[0])
    assert Decoder().decode(memoryview(block)) == REQUESTS[0]  # type: ignore[arg-type]
    assert Decoder().decode(bytearray(block)) == REQUESTS[0]  # type: ignore[arg-type]


def test_encoder_uses_static_entries_and_literals_without_indexing() -> None:
    encoder = Encoder()
    block = encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
    # 0x88 is :status 200; content-type is static name 31 (a 4-bit prefix 15 + 16), no indexing.
    assert block == b"\x88\x0f\x10\x10application/grpc"
    assert encoder.encode([("grpc-status", "0"), ("grpc-message", "")]) == (
        b"\x00\x0bgrpc-status\x010\x00\x0cgrpc-message\x00"
    )
    assert encoder.encode([(b":status", b"200")]) == b"\x88"
    assert encoder.encode([]) == b""


def test_encoder_size_update_only_after_a_settings_change() -> None:
    encoder = Encoder()
    assert encoder.encode([(":status", "200")]) == b"\x88"
    encoder.set_max_table_size(0)
    encoder.set_max_table_size(100)
    assert encoder.encode([(":status", "200")]) == b"\x20\x88"
    assert encoder.encode([(":status", "200")]) == b"\x88"
    reference = hpack.Decoder()
    reference.max_allowed_table_size = 100
    encoder.set_max_table_size(100)
    assert reference.decode(encoder.encode([(":status", "204")]), raw=True) == [(b":status", b"204")]


def test_encoder_text_is_ascii_else_utf8_and_long_strings_use_continuations() -> None:
    long_value = "v" * 300
    block = Encoder().encode([("x-é", "ü"), ("x-long", long_value)])
    assert Decoder().decode(block) == [("x-é".encode(), "ü".encode()), (b"x-long", long_value.encode())]


def test_encoder_cache_is_bounded() -> None:
    encoder = Encoder()
    for i in range(3 * Encoder.CACHE_LIMIT):
        assert Decoder().decode(encoder.encode([("x-request", str(i))])) == [(b"x-request", str(i).encode())]
        assert len(encoder._cache) <= Encoder.CACHE_LIMIT
    encoder._cache.clear()
    long_message = ("grpc-message", "e" * Encoder.CACHED_FIELD_MAX)
    assert Decoder().decode(encoder.encode([long_message])) == [
        (b"grpc-message", b"e" * Encoder.CACHED_FIELD_MAX)
    ]
    assert encoder._cache == {}


# Differential tests against the hpack library.

NAMES = st.sampled_from(
    [n for n, _ in STATIC_TABLE] + [b"content-type", b"grpc-timeout", b"x-a"]
) | st.binary(min_size=0, max_size=20)
VALUES = st.sampled_from([v for _, v in STATIC_TABLE] + [b"application/grpc", b"trailers"]) | st.binary(
    max_size=40
)
FIELD = st.tuples(NAMES, VALUES)
Step = tuple[Fields, list[bool], bool]  # a header list, which fields are sensitive, Huffman


@st.composite
def sessions(draw: st.DrawFn) -> list[int | Step]:
    """Steps of one connection: header lists drawn from a small pool (so fields repeat and get
    indexed), some fields never-indexed, Huffman on or off per block, table size changes."""
    pool = draw(st.lists(FIELD, min_size=1, max_size=12))
    steps: list[int | Step] = []
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 5)) == 0:
            steps.append(draw(st.integers(0, 4096)))
            continue
        fields = draw(st.lists(st.sampled_from(pool), max_size=10))
        sensitive = draw(st.lists(st.booleans(), min_size=len(fields), max_size=len(fields)))
        steps.append((fields, sensitive, draw(st.booleans())))
    return steps


@settings(max_examples=300, deadline=None)
@given(sessions())
def test_decodes_what_the_hpack_library_encodes(steps: list[int | Step]) -> None:
    encoder = hpack.Encoder()
    decoder = Decoder()
    for step in steps:
        if isinstance(step, int):  # a SETTINGS_HEADER_TABLE_SIZE change
            # Setting the library's encoder to its current size again makes it forget a pending
            # update (its "resized" flag is reset), so only real changes are made.
            if step != encoder.header_table_size:
                encoder.header_table_size = step
            continue
        fields, sensitive, huffman = step
        headers = [
            hpack.NeverIndexedHeaderTuple(n, v) if s else hpack.HeaderTuple(n, v)
            for (n, v), s in zip(fields, sensitive, strict=True)
        ]
        block = encoder.encode(headers, huffman=huffman)
        assert decoder.decode(block) == fields
        # After each block both ends agree on the table (the library's encoder keeps its copy);
        # the library sends nothing at all, size update included, for an empty list.
        if not fields:
            continue
        assert decoder.max_table_size == encoder.header_table_size
        assert decoder.dynamic_table == [(n, v) for n, v in encoder.header_table.dynamic_entries]


TEXT = st.text(max_size=20) | st.sampled_from([":status", "content-type", "grpc-status", "200", "0", ""])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(TEXT | NAMES, TEXT | VALUES), max_size=8), max_size=6), st.booleans())
def test_hpack_library_decodes_what_we_encode(
    blocks: list[list[tuple[str | bytes, str | bytes]]], resize: bool
) -> None:
    encoder = Encoder()
    ours = Decoder()
    reference = hpack.Decoder()
    for fields in blocks:
        if resize:
            encoder.set_max_table_size(0)
        block = encoder.encode(fields)
        expected = [(as_bytes(n), as_bytes(v)) for n, v in fields]
        assert [tuple(f) for f in reference.decode(block, raw=True)] == expected
        assert ours.decode(block) == expected
        again = encoder.encode(fields)  # from the cache now, and without the size update
        assert again == (block[1:] if resize else block)


def as_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=6), st.integers(0, 8192))
def test_random_bytes_decode_or_raise_hpack_error_only(blocks: list[bytes], allowed: int) -> None:
    decoder = Decoder(max_table_size=256, max_header_list_size=2048)
    decoder.max_allowed_table_size = allowed
    for block in blocks:
        try:
            fields = decoder.decode(block)
        except HPACKError:
            continue
        assert all(type(n) is bytes and type(v) is bytes for n, v in fields)
        assert decoder.table_size <= decoder.max_table_size <= decoder.max_allowed_table_size


PIECES = [
    b"\x82",
    b"\x86",
    b"\xbe",
    b"\xbf",
    b"\xc0",
    b"\x40\x01a\x01b",
    b"\x41\x82\x1f\x83",
    b"\x7e\x00",
    b"\x00\x81\xff\x01v",
    b"\x10\x01x\x00",
    b"\x0f\x10\x02ab",
    b"\x20",
    b"\x3f\x21",
    b"\x3f\xe1\x1f",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=4).map(b"".join), min_size=1, max_size=12))
def test_agrees_with_the_hpack_library_on_block_sequences(blocks: list[bytes]) -> None:
    """Blocks built from valid and invalid pieces, often repeated: the same fields as the library
    (its tables evolve alike) until the first block either side rejects, which both reject."""
    ours = Decoder()
    reference = hpack.Decoder()
    for block in blocks:
        try:
            expected = [tuple(f) for f in reference.decode(block, raw=True)]
        except hpack.HPACKError:
            with pytest.raises(HPACKError):
                ours.decode(block)
            return
        assert ours.decode(block) == expected
