"""Small in-memory / on-directory stand-ins for the daemon's stores, for pull and push
tests that should not depend on the metadata database: a content store with ingests,
labels and leases, a directory-copy snapshotter, a tar applier with OCI whiteouts, an
image store, a lease manager, and a mark-and-sweep GC that follows containerd's
``containerd.io/gc.ref.*`` labels.

They implement the narrow protocols of ``arun.transfer.stores``; behaviour on errors
follows the core interfaces (AlreadyExists on a committed expected digest, Unavailable on
a locked ingest, FailedPrecondition on a size/digest mismatch with the ingest kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import shutil
import tarfile
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import zstandard

from arun import errdefs
from arun.images import mediatypes as mt
from arun.images.manifest import Descriptor

__all__ = [
    "DirSnapshotter",
    "MemContent",
    "MemImages",
    "MemLeases",
    "MemStores",
    "Mount",
    "TarApplier",
]

_lease: ContextVar[str | None] = ContextVar("memstores-lease", default=None)


@contextlib.contextmanager
def use_lease(lease: str | None) -> Iterator[str | None]:
    tok = _lease.set(lease)
    try:
        yield lease
    finally:
        _lease.reset(tok)


@dataclass
class Info:
    digest: str
    size: int
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Status:
    ref: str
    offset: int
    total: int
    expected: str = ""


@dataclass
class _Ingest:
    ref: str
    data: bytearray = field(default_factory=bytearray)
    total: int = 0
    expected: str = ""
    locked: bool = False


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    async def read_at(self, offset: int, n: int) -> bytes:
        return self._data[offset : offset + n]

    async def close(self) -> None:
        return None


class _Writer:
    def __init__(self, store: MemContent, ing: _Ingest) -> None:
        self.store = store
        self.ing = ing
        self.closed = False

    async def write(self, data: bytes) -> int:
        if self.closed:
            raise errdefs.FailedPreconditionError("writer closed")
        self.ing.data += data
        self.store.bytes_written += len(data)
        return len(data)

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.ing.data).hexdigest()

    async def status(self) -> Status:
        return Status(self.ing.ref, len(self.ing.data), self.ing.total, self.ing.expected)

    async def truncate(self, size: int) -> None:
        if size != 0:
            raise errdefs.InvalidArgumentError("only truncate(0) is supported")
        self.ing.data = bytearray()

    async def commit(self, size: int, expected: str = "", *, labels: Mapping[str, str] | None = None) -> None:
        try:
            data = bytes(self.ing.data)
            if size > 0 and len(data) != size:
                raise errdefs.FailedPreconditionError(f"unexpected commit size {len(data)}, expected {size}")
            dgst = self.digest()
            if expected and dgst != expected:
                raise errdefs.FailedPreconditionError(f"unexpected commit digest {dgst}, expected {expected}")
            self.store.ingests.pop(self.ing.ref, None)
            if dgst in self.store.blobs:
                raise errdefs.AlreadyExistsError(f"content {dgst}: already exists")
            self.store.blobs[dgst] = data
            self.store.infos[dgst] = Info(dgst, len(data), dict(labels or {}))
            lease = _lease.get()
            if lease is not None and self.store.leases is not None:
                self.store.leases.add(lease, "content", dgst)
        finally:
            await self.close()

    async def close(self) -> None:
        self.closed = True
        self.ing.locked = False


class MemContent:
    def __init__(self, leases: MemLeases | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.infos: dict[str, Info] = {}
        self.ingests: dict[str, _Ingest] = {}
        self.leases = leases
        self.bytes_written = 0

    async def info(self, digest: str) -> Info:
        try:
            return self.infos[digest]
        except KeyError:
            raise errdefs.NotFoundError(f"content {digest}: not found") from None

    async def update(self, info: Any, fieldpaths: Sequence[str] = ()) -> Info:
        cur = await self.info(info.digest)
        if not fieldpaths or "labels" in fieldpaths:
            cur.labels = dict(info.labels)
        else:
            for fp in fieldpaths:
                if not fp.startswith("labels."):
                    raise errdefs.InvalidArgumentError(f"cannot update {fp!r}")
                k = fp[len("labels.") :]
                if k in info.labels:
                    cur.labels[k] = info.labels[k]
                else:
                    cur.labels.pop(k, None)
        cur.updated_at = datetime.now(UTC)
        return cur

    async def walk(self) -> AsyncIterator[Info]:
        for i in list(self.infos.values()):
            yield i

    async def delete(self, digest: str) -> None:
        if digest not in self.blobs:
            raise errdefs.NotFoundError(f"content {digest}: not found")
        del self.blobs[digest]
        del self.infos[digest]

    async def reader_at(self, desc: Any) -> _Reader:
        try:
            return _Reader(self.blobs[desc.digest])
        except KeyError:
            raise errdefs.NotFoundError(f"content {desc.digest}: not found") from None

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> _Writer:
        if not ref:
            raise errdefs.InvalidArgumentError("ref must not be empty")
        if expected and expected in self.blobs:
            raise errdefs.AlreadyExistsError(f"content {expected}: already exists")
        ing = self.ingests.get(ref)
        if ing is None:
            ing = self.ingests[ref] = _Ingest(ref, total=total, expected=expected)
            lease = _lease.get()
            if lease is not None and self.leases is not None:
                self.leases.add(lease, "ingests", ref)
        if ing.locked:
            raise errdefs.UnavailableError(f"ref {ref!r} is locked")
        ing.locked = True
        return _Writer(self, ing)

    async def status(self, ref: str) -> Status:
        ing = self.ingests.get(ref)
        if ing is None:
            raise errdefs.NotFoundError(f"ingest {ref!r}: not found")
        return Status(ref, len(ing.data), ing.total, ing.expected)

    async def list_statuses(self) -> list[Status]:
        return [Status(i.ref, len(i.data), i.total, i.expected) for i in self.ingests.values()]

    async def abort(self, ref: str) -> None:
        if self.ingests.pop(ref, None) is None:
            raise errdefs.NotFoundError(f"ingest {ref!r}: not found")


@dataclass(frozen=True)
class Mount:
    type: str
    source: str
    options: tuple[str, ...] = ()
    target: str = ""


@dataclass
class SnapInfo:
    name: str
    kind: str  # "active" | "committed"
    parent: str = ""
    labels: dict[str, str] = field(default_factory=dict)


class DirSnapshotter:
    """Snapshots as directories (each a full copy of its parent, like the native one)."""

    def __init__(self, root: str, leases: MemLeases | None = None, name: str = "native") -> None:
        self.root = root
        self.name = name
        self.leases = leases
        self.snaps: dict[str, SnapInfo] = {}
        self.dirs: dict[str, str] = {}
        self._n = 0
        os.makedirs(root, exist_ok=True)

    async def stat(self, key: str) -> SnapInfo:
        try:
            return self.snaps[key]
        except KeyError:
            raise errdefs.NotFoundError(f"snapshot {key!r}: not found") from None

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        if key in self.snaps:
            raise errdefs.AlreadyExistsError(f"snapshot {key!r}: already exists")
        if parent:
            p = self.snaps.get(parent)
            if p is None or p.kind != "committed":
                raise errdefs.InvalidArgumentError(f"parent {parent!r} is not a committed snapshot")
        self._n += 1
        path = os.path.join(self.root, str(self._n))
        if parent:
            await asyncio.to_thread(shutil.copytree, self.dirs[parent], path, symlinks=True)
        else:
            os.mkdir(path)
        self.snaps[key] = SnapInfo(key, "active", parent, dict(labels or {}))
        self.dirs[key] = path
        lease = _lease.get()
        if lease is not None and self.leases is not None:
            self.leases.add(lease, f"snapshots/{self.name}", key)
        return [Mount("bind", path, ("rw", "rbind"))]

    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        info = await self.stat(key)
        if info.kind != "active":
            raise errdefs.FailedPreconditionError(f"snapshot {key!r} is not active")
        if name in self.snaps:
            raise errdefs.AlreadyExistsError(f"snapshot {name!r}: already exists")
        del self.snaps[key]
        self.snaps[name] = SnapInfo(name, "committed", info.parent, dict(labels or {}))
        self.dirs[name] = self.dirs.pop(key)
        lease = _lease.get()
        if lease is not None and self.leases is not None:
            self.leases.add(lease, f"snapshots/{self.name}", name)

    async def remove(self, key: str) -> None:
        await self.stat(key)
        if any(s.parent == key for s in self.snaps.values()):
            raise errdefs.FailedPreconditionError(f"snapshot {key!r} has children")
        del self.snaps[key]
        path = self.dirs.pop(key)
        await asyncio.to_thread(shutil.rmtree, path, True)

    def path(self, key: str) -> str:
        return self.dirs[key]


def _decompress(media_type: str, blob: bytes) -> bytes:
    comp = mt.layer_compression(media_type)
    if comp is None:
        raise errdefs.UnimplementedError(f"unsupported layer media type {media_type!r}")
    if comp == mt.Compression.GZIP:
        try:
            return gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as exc:
            raise errdefs.InvalidArgumentError(f"bad gzip layer: {exc}") from None
    if comp == mt.Compression.ZSTD:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)) as r:
            return r.read()
    return blob


def _apply(root: str, tar_bytes: bytes) -> None:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tf:
        for ti in tf:
            name = ti.name.strip("/")
            if name.startswith("..") or "/../" in f"/{name}/":
                raise errdefs.InvalidArgumentError(f"unsafe path {ti.name!r}")
            head, _, base = name.rpartition("/")
            target_dir = os.path.join(root, head)
            if base == ".wh..wh..opq":
                for child in os.listdir(target_dir) if os.path.isdir(target_dir) else []:
                    p = os.path.join(target_dir, child)
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
                continue
            if base.startswith(".wh."):
                p = os.path.join(target_dir, base[4:])
                if os.path.lexists(p):
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
                continue
            p = os.path.join(root, name)
            if os.path.lexists(p) and not (ti.isdir() and os.path.isdir(p)):
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
            tf.extract(ti, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")


class TarApplier:
    """Applies layer blobs from ``content`` to the directory of a bind mount."""

    def __init__(self, content: MemContent) -> None:
        self.content = content
        self.applied: list[str] = []

    async def apply(self, desc: Any, mounts: Sequence[Any]) -> Descriptor:
        blob = self.content.blobs.get(desc.digest)
        if blob is None:
            raise errdefs.NotFoundError(f"content {desc.digest}: not found")
        tar_bytes = await asyncio.to_thread(_decompress, desc.media_type, blob)
        await asyncio.to_thread(_apply, mounts[0].source, tar_bytes)
        self.applied.append(desc.digest)
        return Descriptor(mt.OCI_LAYER, "sha256:" + hashlib.sha256(tar_bytes).hexdigest(), len(tar_bytes))


@dataclass
class Image:
    name: str
    target: Any
    labels: dict[str, str] = field(default_factory=dict)


class MemImages:
    def __init__(self) -> None:
        self.images: dict[str, Image] = {}

    async def get(self, name: str) -> Image:
        try:
            return self.images[name]
        except KeyError:
            raise errdefs.NotFoundError(f"image {name!r}: not found") from None

    async def create(self, image: Image) -> Image:
        if image.name in self.images:
            raise errdefs.AlreadyExistsError(f"image {image.name!r}: already exists")
        self.images[image.name] = image
        return image

    async def update(self, image: Image, *fieldpaths: str) -> Image:
        if image.name not in self.images:
            raise errdefs.NotFoundError(f"image {image.name!r}: not found")
        self.images[image.name] = image
        return image

    async def delete(self, name: str) -> None:
        await self.get(name)
        del self.images[name]


class MemLeases:
    def __init__(self) -> None:
        self.leases: dict[str, dict[str, str]] = {}
        self.resources: dict[str, set[tuple[str, str]]] = {}
        self.created: list[str] = []

    async def create(self, id: str, labels: dict[str, str] | None = None) -> str:
        if id in self.leases:
            raise errdefs.AlreadyExistsError(f"lease {id!r}: already exists")
        self.leases[id] = dict(labels or {})
        self.resources[id] = set()
        self.created.append(id)
        return id

    async def delete(self, id: str, *, sync: bool = False) -> None:
        if self.leases.pop(id, None) is None:
            raise errdefs.NotFoundError(f"lease {id!r}: not found")
        self.resources.pop(id, None)

    def add(self, lease: str, kind: str, id: str) -> None:
        self.resources.setdefault(lease, set()).add((kind, id))


class MemStores:
    """One namespace's worth of fake stores, wired together, with a GC."""

    def __init__(self, root: str) -> None:
        self.leases = MemLeases()
        self.content = MemContent(self.leases)
        self.snapshotter = DirSnapshotter(os.path.join(root, "snapshots"), self.leases)
        self.applier = TarApplier(self.content)
        self.images = MemImages()

    def stores(self, **kw: Any) -> Any:
        from arun.transfer.stores import Stores

        return Stores(
            content=self.content,
            images=self.images,
            make_image=lambda name, target, labels: Image(name, target, dict(labels)),
            leases=self.leases,
            lease_context=use_lease,
            snapshotter=self.snapshotter,
            snapshotter_name=self.snapshotter.name,
            applier=self.applier,
            **kw,
        )

    async def gc(self) -> None:
        """Mark from images and leases along ``containerd.io/gc.ref.*`` labels; sweep the rest."""
        content: set[str] = set()
        snaps: set[str] = set()
        ingests: set[str] = set()
        stack: list[tuple[str, str]] = []
        for img in self.images.images.values():
            stack.append(("content", img.target.digest))
        for res in self.leases.resources.values():
            for kind, rid in res:
                if kind == "ingests":
                    ingests.add(rid)
                else:
                    stack.append(("snap" if kind.startswith("snapshots/") else "content", rid))
        while stack:
            kind, rid = stack.pop()
            if kind == "content":
                if rid in content or rid not in self.content.infos:
                    continue
                content.add(rid)
                for k, v in self.content.infos[rid].labels.items():
                    if k.startswith("containerd.io/gc.ref.content"):
                        stack.append(("content", v))
                    elif k.startswith("containerd.io/gc.ref.snapshot."):
                        stack.append(("snap", v))
            else:
                if rid in snaps or rid not in self.snapshotter.snaps:
                    continue
                snaps.add(rid)
                parent = self.snapshotter.snaps[rid].parent
                if parent:
                    stack.append(("snap", parent))
        for d in [d for d in self.content.blobs if d not in content]:
            await self.content.delete(d)
        for ref in [r for r in self.content.ingests if r not in ingests]:
            del self.content.ingests[ref]
        # Remove unreferenced snapshots leaves first.
        while True:
            dead = [
                k
                for k, s in self.snapshotter.snaps.items()
                if k not in snaps and not any(c.parent == k for c in self.snapshotter.snaps.values())
            ]
            if not dead:
                break
            for k in dead:
                await self.snapshotter.remove(k)
