"""HPACK (RFC 7541), the header compression of HTTP/2, written for the daemon's gRPC server.

The `Decoder` is the full thing: it keeps the per-connection dynamic table the peer's encoder
fills, reads every representation of RFC 7541 section 6 (indexed, the three literal kinds, table
size updates at the start of a block), Huffman-coded strings included, and rejects malformed
input with `HPACKError` only. It returns raw ``(name, value)`` byte pairs; what counts as valid
header text is the connection's business.

The `Encoder` is deliberately small: it never inserts into the peer's dynamic table, so the bytes
for one ``(name, value)`` pair never depend on what was sent before and can be cached. A pair
that is in the static table goes out as one indexed byte (``:status: 200`` is ``0x88``); any
other pair as a literal without indexing, naming a static-table entry when the name is there,
strings not Huffman-coded (the cache makes encoding cost nothing after the first time, and the
few bytes Huffman saves on a unix socket are not worth a second code path).

Speed matters here (every gRPC call decodes one block and encodes two): the decoder indexes the
``bytes`` block directly (ints), keeps static and dynamic entries in one list so an index is one
list lookup, remembers the few short blocks that did not change the dynamic table (while it stays
as it is, they decode to the same fields), and decodes Huffman four bits at a time through a
table built once at import.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Decoder", "Encoder", "HPACKError"]


class HPACKError(Exception):
    """A header block that cannot be decoded (the connection answers COMPRESSION_ERROR)."""


# RFC 7541 Appendix A, indices 1..61.
STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)
_DYNAMIC_BASE = len(STATIC_TABLE) + 1  # index of the newest dynamic-table entry (62)
ENTRY_OVERHEAD = 32  # RFC 7541 4.1: an entry's size is len(name) + len(value) + 32
_KNOWN_BLOCKS = 32  # Decoder: at most this many remembered blocks ...
_KNOWN_BLOCK_MAX = 64  # ... of at most this many bytes each
_STATIC_SIZES = (0, *(len(name) + len(value) + ENTRY_OVERHEAD for name, value in STATIC_TABLE))

# RFC 7541 Appendix B: the length in bits of the Huffman code of each symbol 0..255 and of EOS
# (256). The code is canonical (codes of one length are consecutive, in symbol order, and each
# length continues from the last code of the shorter one), so the lengths determine the codes.
HUFFMAN_LENGTHS: tuple[int, ...] = tuple(
    int(bits)
    for row in """
    13 23 28 28 28 28 28 28 28 24 30 28 28 30 28 28  # 0x00
    28 28 28 28 28 28 30 28 28 28 28 28 28 28 28 28  # 0x10
     6 10 10 12 13  6  8 11 10 10  8 11  8  6  6  6  # 0x20 ' ' .. '/'
     5  5  5  6  6  6  6  6  6  6  7  8 15  6 12 10  # 0x30 '0' .. '?'
    13  6  7  7  7  7  7  7  7  7  7  7  7  7  7  7  # 0x40 '@' .. 'O'
     7  7  7  7  7  7  7  7  8  7  8 13 19 13 14  6  # 0x50 'P' .. '_'
    15  5  6  5  6  5  6  6  6  5  7  7  6  6  6  5  # 0x60 '`' .. 'o'
     6  7  6  5  5  6  7  7  7  7  7 15 11 14 13 28  # 0x70 'p' .. 0x7f
    20 22 20 20 22 22 22 23 22 23 23 23 23 23 24 23  # 0x80
    24 24 22 23 24 23 23 23 23 21 22 23 22 23 23 24  # 0x90
    22 21 20 22 22 23 23 21 23 22 22 24 21 22 23 23  # 0xa0
    21 21 22 21 23 22 23 23 20 22 22 22 23 22 22 23  # 0xb0
    26 26 20 19 22 23 22 25 26 26 26 27 27 26 24 25  # 0xc0
    19 21 26 27 27 26 27 24 21 21 26 26 28 27 27 27  # 0xd0
    20 24 20 21 22 21 21 23 22 22 25 25 24 24 26 23  # 0xe0
    26 27 26 26 27 27 27 27 27 28 27 27 27 27 27 26  # 0xf0
    30  # EOS
""".splitlines()
    for bits in row.partition("#")[0].split()
)
EOS = 256


def huffman_codes() -> list[int]:
    """The code of each symbol 0..256 (EOS), MSB-first, each ``HUFFMAN_LENGTHS[sym]`` bits long."""
    order = sorted(range(EOS + 1), key=lambda sym: (HUFFMAN_LENGTHS[sym], sym))
    codes = [0] * (EOS + 1)
    code = -1
    length = HUFFMAN_LENGTHS[order[0]]
    for sym in order:
        code = (code + 1) << (HUFFMAN_LENGTHS[sym] - length)
        length = HUFFMAN_LENGTHS[sym]
        codes[sym] = code
    return codes


def _huffman_decoder() -> tuple[list[int], frozenset[int]]:
    """The nibble-wise decoding automaton: (transitions, accepting states).

    A state is an internal node of the code tree, numbered from 0 (the root), premultiplied by
    16 so that ``state + nibble`` indexes the transitions. A transition is
    ``next_state << 9 | symbol`` with symbol 256 for "nothing completed on this nibble" (the
    shortest code is 5 bits, so a nibble completes at most one symbol). Reaching EOS leads to a
    dead state that loops on itself and does not accept: RFC 7541 5.2 makes EOS in a string an
    error. A string may end only at a node reached from the root by at most 7 one-bits (the
    padding, a prefix of EOS, 5.2).
    """
    # The tree: children[node] = [child for bit 0, child for bit 1]; a leaf is ~symbol (< 0).
    children: list[list[int]] = [[0, 0]]
    for sym, code in enumerate(huffman_codes()):
        node = 0
        for shift in range(HUFFMAN_LENGTHS[sym] - 1, 0, -1):
            bit = (code >> shift) & 1
            nxt = children[node][bit]
            if nxt == 0:
                nxt = len(children)
                children.append([0, 0])
                children[node][bit] = nxt
            node = nxt
        children[node][code & 1] = ~sym
    dead = len(children)
    transitions: list[int] = []
    for start in range(dead + 1):
        for nibble in range(16):
            node, emitted = start, EOS
            for shift in (3, 2, 1, 0):
                if node == dead:
                    break
                child = children[node][(nibble >> shift) & 1]
                if child >= 0:
                    node = child
                elif ~child == EOS:
                    node = dead
                else:
                    node, emitted = 0, ~child
            transitions.append((node << 4) << 9 | emitted)
    accepting = {0}
    node = 0
    for _ in range(7):
        node = children[node][1]
        accepting.add(node << 4)
    return transitions, frozenset(accepting)


_HUFFMAN_STEPS, _HUFFMAN_ACCEPTING = _huffman_decoder()


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded string (RFC 7541 5.2); bad padding or EOS raise HPACKError."""
    steps = _HUFFMAN_STEPS
    out = bytearray()
    append = out.append
    state = 0
    for byte in data:
        step = steps[state + (byte >> 4)]
        if not step & 256:
            append(step & 255)
        step = steps[(step >> 9) + (byte & 15)]
        if not step & 256:
            append(step & 255)
        state = step >> 9
    if state not in _HUFFMAN_ACCEPTING:
        raise HPACKError("invalid huffman-coded string: EOS symbol or bad padding")
    return bytes(out)


def _continue_integer(block: bytes, pos: int, value: int) -> tuple[int, int]:
    """Read the continuation bytes of an integer whose prefix was full (RFC 7541 5.1).

    ``value`` is the prefix's value (2^N - 1), ``pos`` the first continuation byte. Returns the
    integer and the position after it. More than five continuation bytes (values past 2^35,
    which nothing in HTTP/2 needs) are rejected as over-long.
    """
    end = len(block)
    shift = 0
    while True:
        if pos >= end:
            raise HPACKError("truncated integer")
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HPACKError("integer encoding too long")


def _read_string(block: bytes, pos: int) -> tuple[bytes, int]:
    """Read a string literal (RFC 7541 5.2) at ``pos``; returns it and the position after it."""
    if pos >= len(block):
        raise HPACKError("truncated header block: string expected")
    first = block[pos]
    length = first & 0x7F
    pos += 1
    if length == 0x7F:
        length, pos = _continue_integer(block, pos, length)
    stop = pos + length
    if stop > len(block):
        raise HPACKError(f"string of {length} bytes runs past the end of the header block")
    if first & 0x80:
        return huffman_decode(block[pos:stop]), stop
    return block[pos:stop], stop


class Decoder:
    """Decodes the header blocks of one connection (the dynamic table lives across blocks).

    ``max_table_size`` is both the initial dynamic table size and the largest the peer's encoder
    may choose (``max_allowed_table_size``, our SETTINGS_HEADER_TABLE_SIZE, may change later).
    A block whose header list (RFC 7540 6.5.2: name + value + 32 per field) exceeds
    ``max_header_list_size`` fails as soon as the limit is passed: the fields before it have
    already changed the dynamic table, so after any HPACKError the decoder is out of step with
    the peer and the connection must end (COMPRESSION_ERROR), as RFC 7540 4.3 requires anyway.
    """

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 65536) -> None:
        self.max_header_list_size = max_header_list_size
        # Entry 0 is never a valid index; 1..61 the static table; 62.. the dynamic table, newest first.
        self._entries: list[tuple[bytes, bytes]] = [(b"", b""), *STATIC_TABLE]
        self._sizes = list(_STATIC_SIZES)  # each entry's size, to count the header list's
        self._size = 0  # the dynamic table's size (RFC 7541 4.1)
        self._max_size = max_table_size  # the size the peer's encoder last chose
        self._allowed = max_table_size
        self._update_required = False
        # Short blocks decoded since the dynamic table last changed that did not change it
        # either, with their header list sizes: decoding one again gives the same fields. A
        # client that indexes everything (grpc-go) sends the same few blocks call after call.
        self._known: dict[bytes, tuple[list[tuple[bytes, bytes]], int]] = {}

    @property
    def max_allowed_table_size(self) -> int:
        """The largest dynamic table size the peer may choose (our SETTINGS_HEADER_TABLE_SIZE)."""
        return self._allowed

    @max_allowed_table_size.setter
    def max_allowed_table_size(self, size: int) -> None:
        # Set once the peer acknowledged our SETTINGS. A limit below the size in use obliges the
        # peer to begin its next block with a size update that fits (RFC 7541 4.2).
        self._allowed = size
        if size < self._max_size:
            self._update_required = True

    @property
    def table_size(self) -> int:
        """The dynamic table's current size in the RFC's units."""
        return self._size

    @property
    def max_table_size(self) -> int:
        """The dynamic table's current maximum size (the peer's last size update)."""
        return self._max_size

    @property
    def dynamic_table(self) -> list[tuple[bytes, bytes]]:
        """The dynamic table's entries, newest (index 62) first."""
        return self._entries[_DYNAMIC_BASE:]

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The header fields of one complete header block, in order, as raw byte pairs."""
        if type(block) is not bytes:
            block = bytes(block)
        known = self._known.get(block)
        if known is not None and known[1] <= self.max_header_list_size and not self._update_required:
            return known[0].copy()
        end = len(block)
        pos = 0
        while pos < end and block[pos] & 0xE0 == 0x20:
            pos = self._size_update(block, pos)
        entries = self._entries
        sizes = self._sizes
        count = len(entries)  # after the size updates, which may have evicted entries
        if self._update_required:
            raise HPACKError("header block lacks the dynamic table size update the new limit requires")
        headers: list[tuple[bytes, bytes]] = []
        append = headers.append
        list_size = 0
        limit = self.max_header_list_size
        unchanged = pos == 0  # no size update so far, nor an insertion
        while pos < end:
            first = block[pos]
            pos += 1
            if first & 0x80:  # indexed header field (6.1)
                index = first & 0x7F
                if index == 0x7F:
                    index, pos = _continue_integer(block, pos, index)
                if not 0 < index < count:
                    raise HPACKError(f"invalid header table index {index}")
                append(entries[index])
                list_size += sizes[index]
                if list_size > limit:
                    raise HPACKError(f"header list larger than {limit} bytes")
                continue
            if first & 0x40:  # literal with incremental indexing (6.2.1)
                index = first & 0x3F
                if index == 0x3F:
                    index, pos = _continue_integer(block, pos, index)
                field, pos = self._literal(block, pos, index)
                self._insert(field)
                count = len(entries)
                unchanged = False
            elif first & 0x20:
                raise HPACKError("dynamic table size update after a header field")
            else:  # literal without indexing (6.2.2) or never indexed (6.2.3)
                index = first & 0x0F
                if index == 0x0F:
                    index, pos = _continue_integer(block, pos, index)
                field, pos = self._literal(block, pos, index)
            list_size += len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
            if list_size > limit:
                raise HPACKError(f"header list larger than {limit} bytes")
            append(field)
        if unchanged and end <= _KNOWN_BLOCK_MAX:
            if len(self._known) >= _KNOWN_BLOCKS:
                self._known.clear()
            self._known[block] = (headers.copy(), list_size)
        return headers

    def _literal(self, block: bytes, pos: int, index: int) -> tuple[tuple[bytes, bytes], int]:
        """The name (indexed if ``index``, else a string) and value of a literal field."""
        if index:
            if index >= len(self._entries):
                raise HPACKError(f"invalid header table index {index}")
            name = self._entries[index][0]
        else:
            name, pos = _read_string(block, pos)
        value, pos = _read_string(block, pos)
        return (name, value), pos

    def _size_update(self, block: bytes, pos: int) -> int:
        """Apply the dynamic table size update (6.3) at ``pos``; returns the position after it."""
        size = block[pos] & 0x1F
        pos += 1
        if size == 0x1F:
            size, pos = _continue_integer(block, pos, size)
        if size > self._allowed:
            raise HPACKError(f"dynamic table size {size} above the allowed {self._allowed}")
        self._max_size = size
        self._update_required = False
        self._known.clear()
        self._evict(size)
        return pos

    def _evict(self, size: int) -> None:
        """Drop the oldest entries until the table's size is at most ``size``."""
        entries, sizes = self._entries, self._sizes
        while self._size > size:
            entries.pop()
            self._size -= sizes.pop()

    def _insert(self, field: tuple[bytes, bytes]) -> None:
        """Add a field as the newest entry, evicting as needed (RFC 7541 4.4)."""
        self._known.clear()
        size = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
        if size > self._max_size:
            del self._entries[_DYNAMIC_BASE:]  # an entry larger than the table empties it
            del self._sizes[_DYNAMIC_BASE:]
            self._size = 0
            return
        self._evict(self._max_size - size)
        self._entries.insert(_DYNAMIC_BASE, field)
        self._sizes.insert(_DYNAMIC_BASE, size)
        self._size += size


def encode_integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """``value`` in an N-bit prefix (RFC 7541 5.1), the first byte's high bits being ``flags``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string(data: bytes) -> bytes:
    """A string literal, not Huffman-coded."""
    return encode_integer(len(data), 7, 0x00) + data


def _as_bytes(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        return text.encode("utf-8")


_STATIC_FIELDS: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, _field in enumerate(STATIC_TABLE, 1):
    _STATIC_FIELDS.setdefault(_field, _index)
    _STATIC_NAMES.setdefault(_field[0], _index)


class Encoder:
    """Encodes header lists without ever touching the peer's dynamic table.

    The only state is whether the next block owes the peer a dynamic table size update. The
    first block carries none: the peer's table starts empty and stays empty since nothing is
    ever inserted, so a size update would tell its decoder nothing it needs. After
    `set_max_table_size` the next block begins with an update to 0, which is valid whatever the
    new limit is and satisfies RFC 7541 4.2's "MUST signal" when the limit went below 4096.
    """

    CACHE_LIMIT = 1024  # distinct (name, value) pairs kept; the cache is dropped when full
    CACHED_FIELD_MAX = 512  # longer encodings (a long grpc-message, say) are not kept

    def __init__(self) -> None:
        self._cache: dict[tuple[str | bytes, str | bytes], bytes] = {}
        self._size_update = False

    def set_max_table_size(self, size: int) -> None:
        """The peer changed SETTINGS_HEADER_TABLE_SIZE: the next block starts with a size update."""
        self._size_update = True

    def encode(self, headers: Iterable[tuple[str | bytes, str | bytes]]) -> bytes:
        """One header block for ``headers`` (str encoded ASCII, else UTF-8)."""
        cache = self._cache
        parts = [b"\x20"] if self._size_update else []
        self._size_update = False
        for name, value in headers:
            encoded = cache.get((name, value))
            if encoded is None:
                encoded = self._encode_field(name, value)
            parts.append(encoded)
        return b"".join(parts)

    def _encode_field(self, name: str | bytes, value: str | bytes) -> bytes:
        raw_name, raw_value = _as_bytes(name), _as_bytes(value)
        index = _STATIC_FIELDS.get((raw_name, raw_value))
        if index is not None:
            encoded = bytes((0x80 | index,))
        else:
            index = _STATIC_NAMES.get(raw_name)
            if index is not None:
                encoded = encode_integer(index, 4, 0x00) + _encode_string(raw_value)
            else:
                encoded = b"\x00" + _encode_string(raw_name) + _encode_string(raw_value)
        if len(encoded) <= self.CACHED_FIELD_MAX:
            if len(self._cache) >= self.CACHE_LIMIT:
                self._cache.clear()
            self._cache[(name, value)] = encoded
        return encoded
