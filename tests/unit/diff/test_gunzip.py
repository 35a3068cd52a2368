"""The layer reader's gzip path: members in a row, zero padding, and damaged streams."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zlib

import pytest

from arun.core.mediatypes import Compression
from arun.diff.compression import LayerReader
from arun.errdefs import InvalidArgumentError


def _gz(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _chunks(blob: bytes, n: int = 7000) -> LayerReader:
    pieces = iter([blob[i : i + n] for i in range(0, len(blob), n)])
    return LayerReader(lambda: next(pieces, b""), Compression.GZIP)


def _read_all(r: LayerReader) -> bytes:
    out = r.read(-1)
    r.drain()
    return out


def test_members_in_a_row_with_zero_padding() -> None:
    a, b = os.urandom(300_000) + b"a" * 200_000, b"b" * 1_000_000
    blob = _gz(a) + b"\0" * 9 + _gz(b) + b"\0" * 3
    r = _chunks(blob)
    assert _read_all(r) == a + b
    assert r.digest() == "sha256:" + hashlib.sha256(a + b).hexdigest()
    assert r.compressed_digest() == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert r.raw_size == len(blob) and r.size == len(a) + len(b)


def test_small_reads_as_tarfile_makes_them() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(50):
            data = f"file {i}\n".encode() * i
            ti = tarfile.TarInfo(f"d/f{i}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    r = _chunks(_gz(buf.getvalue()), 100)
    names = []
    with tarfile.TarFile(fileobj=r, mode="r") as tf:  # type: ignore[arg-type]
        for ti in tf:
            names.append(ti.name)
            f = tf.extractfile(ti)
            assert f is not None and f.read() == f"file {ti.name[3:]}\n".encode() * int(ti.name[3:])
    assert names == [f"d/f{i}" for i in range(50)]


@pytest.mark.parametrize(
    "damage",
    ["truncated", "crc", "length", "garbage-after"],
)
def test_damaged_streams_are_refused(damage: str) -> None:
    data = os.urandom(50_000) * 3
    blob = bytearray(_gz(data))
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    elif damage == "crc":
        blob[-8] ^= 0xFF
    elif damage == "length":
        blob[-1] ^= 0x01
    else:
        blob += b"not gzip at all"
    with pytest.raises(InvalidArgumentError, match="invalid gzip stream"):
        _read_all(_chunks(bytes(blob)))
