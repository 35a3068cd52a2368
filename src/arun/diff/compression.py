"""Streams for layers: decompress while hashing both sides, and compress while hashing.

Everything here is blocking and meant to run in a worker thread; zlib,
zstandard and hashlib release the GIL on large buffers, so the event loop
keeps running while they work.
"""

from __future__ import annotations

import importlib
import io
import zlib
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, cast

import zstandard

from arun.core.content import hasher
from arun.core.mediatypes import Compression
from arun.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from hashlib import _Hash

# Inflate with ISA-L when its binding is installed (the same streams, several times faster
# on compressible layers); zlib otherwise.
_inflate: Any
_decode_errors: tuple[type[BaseException], ...]
try:
    _inflate = importlib.import_module("isal.isal_zlib")
    _decode_errors = (OSError, EOFError, zlib.error, _inflate.error)
except ImportError:  # pragma: no cover - depends on the installation
    _inflate = zlib
    _decode_errors = (OSError, EOFError, zlib.error)

INFLATE = "isal" if _inflate is not zlib else "zlib"

__all__ = ["INFLATE", "Compressor", "LayerReader", "RawSource", "detect"]

GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_OUT_CHUNK = 256 * 1024
_IN_CHUNK = 1 << 20
_FEED = 64 * 1024
_HISTORY = 4096

# A function returning the next chunk of the compressed blob, b"" at the end.
RawSource = Callable[[], bytes]


def detect(head: bytes) -> Compression:
    """The compression of a stream from its first bytes (containerd's ``DetectCompression``)."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


class _RawFile(io.RawIOBase):
    """The compressed blob as a file, hashing and counting what is read."""

    def __init__(self, source: RawSource) -> None:
        self._source = source
        self._buf = b""
        self._off = 0
        self._eof = False
        self.h: _Hash = hasher()
        self.size = 0

    def readable(self) -> bool:
        return True

    def _more(self) -> bool:
        if self._eof:
            return False
        chunk = self._source()
        if not chunk:
            self._eof = True
            return False
        self.h.update(chunk)
        self.size += len(chunk)
        self._buf, self._off = chunk, 0
        return True

    def peek(self, n: int) -> bytes:
        if self._off >= len(self._buf):
            self._more()
        return self._buf[self._off : self._off + n]

    def readinto(self, b: Any) -> int:
        if self._off >= len(self._buf) and not self._more():
            return 0
        n = min(len(b), len(self._buf) - self._off)
        b[:n] = self._buf[self._off : self._off + n]
        self._off += n
        return n

    def read_chunk(self, n: int) -> bytes:
        if self._off >= len(self._buf) and not self._more():
            return b""
        data = self._buf[self._off : self._off + n]
        self._off += len(data)
        return data

    def drain(self) -> None:
        self._off = len(self._buf)
        while self._more():
            self._off = len(self._buf)


class _Gunzip:
    """gzip decompression of a ``_RawFile`` in bounded pieces: members one after the other
    (zero padding between them skipped, as Python's gzip does), each trailer's CRC and
    length checked by the inflater; a stream cut short is an error.

    The inflater gets the input in slices of ``_FEED`` bytes and produces at most
    ``_OUT_CHUNK`` bytes per call into a buffer that small reads (tar headers) are served
    from: asking it for a few hundred bytes at a time would copy the unconsumed rest of
    the input on every call.
    """

    def __init__(self, raw: _RawFile) -> None:
        self._raw = raw
        self._d: Any = _inflate.decompressobj(16 + zlib.MAX_WBITS)
        self._in = b""  # input not yet given to the inflater
        self._in_off = 0
        self._out = b""
        self._out_off = 0
        self._done = False

    def _input(self) -> bytes:
        """The next slice of input: the inflater's leftover first, then the raw chunk."""
        tail: bytes = self._d.unconsumed_tail
        if tail:
            return tail
        if self._in_off >= len(self._in):
            self._in = self._raw.read_chunk(_IN_CHUNK)
            self._in_off = 0
            if not self._in:
                return b""
        piece = self._in[self._in_off : self._in_off + _FEED]
        self._in_off += len(piece)
        return piece

    def _next_member(self) -> bool:
        """After a member: start the next one if more (non-zero) data follows."""
        rest = (self._d.unused_data + self._in[self._in_off :]).lstrip(b"\0")
        self._in, self._in_off = b"", 0
        while not rest:
            chunk = self._raw.read_chunk(_IN_CHUNK)
            if not chunk:
                self._done = True
                return False
            rest = chunk.lstrip(b"\0")
        self._d = _inflate.decompressobj(16 + zlib.MAX_WBITS)
        self._in = rest
        return True

    def _fill(self) -> None:
        while not self._done:
            if self._d.eof:
                if not self._next_member():
                    return
                continue
            data = self._input()
            if not data:
                raise EOFError("compressed stream ended before the end-of-stream marker")
            out: bytes = self._d.decompress(data, _OUT_CHUNK)
            if out:
                self._out, self._out_off = out, 0
                return

    def read(self, n: int) -> bytes:
        if self._out_off >= len(self._out):
            self._fill()
            if self._out_off >= len(self._out):
                return b""
        if self._out_off == 0 and n >= len(self._out):
            data = self._out
        else:
            data = self._out[self._out_off : self._out_off + n]
        self._out_off += len(data)
        return data


class LayerReader:
    """A forward-only file object over a (possibly compressed) layer blob.

    ``read``, ``seek`` (forward, or back by a few KiB) and ``tell`` are enough
    for ``tarfile`` in ``r`` mode. While reading it hashes the compressed
    bytes (``compressed_digest``) and the uncompressed ones (``digest``, the
    diffID) and counts both. Output comes in bounded chunks, so a
    decompression bomb costs time, not memory.
    """

    def __init__(self, source: RawSource, compression: Compression, *, detect_magic: bool = True) -> None:
        self._raw = _RawFile(source)
        if compression is not Compression.NONE and detect_magic:
            compression = detect(self._raw.peek(4))
        self.compression = compression
        self._stream: Any
        if compression is Compression.GZIP:
            self._stream = _Gunzip(self._raw)
        elif compression is Compression.ZSTD:
            self._stream = zstandard.ZstdDecompressor().stream_reader(
                cast(IO[bytes], self._raw), read_size=_IN_CHUNK, read_across_frames=True, closefd=False
            )
        else:
            self._stream = None
        self._h: _Hash = hasher()
        self.size = 0  # uncompressed bytes produced
        self._pos = 0
        # Recently read bytes, so that tarfile may step back a little (it re-reads the
        # last byte of a member to detect truncation), and bytes given back.
        self._hist = b""
        self._back = b""

    @property
    def raw_size(self) -> int:
        return self._raw.size

    def _read_stream(self, n: int) -> bytes:
        try:
            data: bytes = self._raw.read_chunk(n) if self._stream is None else self._stream.read(n)
        except _decode_errors as e:
            raise InvalidArgumentError(f"invalid {self.compression.value} stream: {e}") from e
        except zstandard.ZstdError as e:
            raise InvalidArgumentError(f"invalid zstd stream: {e}") from e
        if data:
            self._h.update(data)
            self.size += len(data)
        return data

    def read(self, n: int | None = -1) -> bytes:
        unbounded = n is None or n < 0
        want = -1 if n is None else n
        parts: list[bytes] = []
        if self._back:
            take = self._back if unbounded else self._back[:want]
            self._back = self._back[len(take) :]
            parts.append(take)
            want -= len(take)
        if unbounded:
            while chunk := self._read_stream(_OUT_CHUNK):
                parts.append(chunk)
        else:
            while want > 0:
                chunk = self._read_stream(want)
                if not chunk:
                    break
                parts.append(chunk)
                want -= len(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos += len(data)
        if len(data) >= _HISTORY:
            self._hist = data[-_HISTORY:]
        elif data:
            self._hist = (self._hist + data)[-_HISTORY:]
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence != 0:
            raise OSError("layer streams cannot seek from the end")
        if pos < self._pos:
            back = self._pos - pos
            if back > len(self._hist):
                raise OSError(f"layer streams only seek forward ({self._pos} -> {pos})")
            self._back = self._hist[len(self._hist) - back :] + self._back
            self._hist = self._hist[: len(self._hist) - back]
            self._pos = pos
            return pos
        while self._pos < pos:
            if not self.read(min(pos - self._pos, _IN_CHUNK)):
                break
        return self._pos

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return True

    def unread(self, data: bytes) -> None:
        """Give back ``data`` (just read) so that the next read returns it again."""
        self._back = data + self._back
        self._pos -= len(data)

    def drain(self) -> None:
        """Read to the end, so that both digests cover the whole blob."""
        self._back = b""
        while self._read_stream(_IN_CHUNK):
            pass
        self._raw.drain()

    def digest(self) -> str:
        return f"{self._h.name}:{self._h.hexdigest()}"

    def compressed_digest(self) -> str:
        return f"{self._raw.h.name}:{self._raw.h.hexdigest()}"


class Compressor:
    """gzip (or no) compression of a tar stream, hashing the uncompressed side.

    ``write`` takes tar bytes; compressed output is handed to ``sink`` in chunks
    of about ``chunk`` bytes.
    """

    def __init__(
        self, sink: Callable[[bytes], None], *, gzip: bool, level: int = 6, chunk: int = 1 << 20
    ) -> None:
        self._sink = sink
        self._c: Any = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if gzip else None
        self._h: _Hash = hasher()
        self._out: list[bytes] = []
        self._out_len = 0
        self._chunk = chunk
        self.size = 0

    def write(self, data: bytes) -> int:
        n = len(data)
        self._h.update(data)
        self.size += n
        out = self._c.compress(data) if self._c is not None else bytes(data)
        if out:
            self._out.append(out)
            self._out_len += len(out)
            if self._out_len >= self._chunk:
                self._flush_out()
        return n

    def _flush_out(self) -> None:
        if self._out:
            self._sink(b"".join(self._out))
            self._out.clear()
            self._out_len = 0

    def close(self) -> None:
        if self._c is not None:
            self._out.append(self._c.flush())
            self._c = None
        self._flush_out()

    def digest(self) -> str:
        """Digest of the uncompressed stream written so far."""
        return f"{self._h.name}:{self._h.hexdigest()}"
