"""Building layer tars for tests and benchmarks, including deliberately hostile ones."""

from __future__ import annotations

import gzip as _gzip
import io
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import zstandard

from arun.core import mediatypes
from arun.core.content import ContentStore, Descriptor, digest_bytes

__all__ = ["Entry", "compress", "put_layer", "tar_bytes"]

_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


@dataclass
class Entry:
    """One tar entry. ``name`` is written verbatim (no normalisation), so it can be hostile."""

    name: str
    type: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = 1_600_000_000
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    pax: Mapping[str, str] = field(default_factory=dict)


def tar_bytes(entries: Iterable[Entry], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tw:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = _TYPES[e.type]
            ti.mode = e.mode
            ti.uid, ti.gid = e.uid, e.gid
            ti.mtime = e.mtime
            ti.linkname = e.linkname
            ti.devmajor, ti.devminor = e.devmajor, e.devminor
            pax = dict(e.pax)
            for k, v in e.xattrs.items():
                pax["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
            ti.pax_headers = pax
            if e.type == "file":
                ti.size = len(e.data)
                tw.addfile(ti, io.BytesIO(e.data))
            else:
                tw.addfile(ti)
    return buf.getvalue()


def compress(data: bytes, how: str) -> tuple[bytes, str]:
    """``(blob, media type)`` for ``how`` in ``none``/``gzip``/``zstd``."""
    if how == "gzip":
        return _gzip.compress(data, compresslevel=6, mtime=0), mediatypes.OCI_LAYER_GZIP
    if how == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data), mediatypes.OCI_LAYER_ZSTD
    if how == "none":
        return data, mediatypes.OCI_LAYER
    raise ValueError(how)


async def put_layer(store: ContentStore, tar: bytes, how: str = "gzip") -> tuple[Descriptor, str]:
    """Store ``tar`` compressed with ``how``; returns its descriptor and the diffID."""
    blob, media_type = compress(tar, how)
    dgst = digest_bytes(blob)
    try:
        w = await store.writer(f"layer-{dgst}", total=len(blob), expected=dgst)
    except Exception as e:  # already there
        from arun.errdefs import AlreadyExistsError

        if not isinstance(e, AlreadyExistsError):
            raise
    else:
        for off in range(0, len(blob), 1 << 20):
            await w.write(blob[off : off + (1 << 20)])
        await w.commit(len(blob), dgst)
    return Descriptor(media_type, dgst, len(blob)), digest_bytes(tar)
