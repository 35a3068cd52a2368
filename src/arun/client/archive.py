"""Image archives in and out of a daemon, through its content and image services.

``import_archive`` reads an OCI image layout tar (``oci-layout``, ``index.json``,
``blobs/<alg>/<hex>``; what ``ctr images export`` and ``docker save`` >= 25
write) or a Docker archive (``manifest.json``; older ``docker save``), writes
the blobs of the chosen platform into the content store with containerd's GC
labels on every parent, creates or re-points one image record per named
entry, and unpacks each image into a snapshotter unless told not to. This is
what ``ctr images import`` does client-side in containerd 1.6, so it works
against containerd as well as arun.

``export_archive`` writes the OCI layout of named images, with the
``io.containerd.image.name`` and ``org.opencontainers.image.ref.name``
annotations ``ctr images import`` reads back.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import io
import json
import tarfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from arun import errdefs
from arun.client.content import digest_of
from arun.client.images import (
    CONFIG_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MT_DOCKER_CONFIG,
    MT_DOCKER_MANIFEST,
    MT_OCI_INDEX,
    Platform,
    default_platform,
    resolve_manifest,
)
from arun.client.types import Descriptor, ImageInfo, PullProgress

if TYPE_CHECKING:
    from arun.client.client import Client

__all__ = ["export_archive", "import_archive"]

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_LAYER_HINTS = ("layer", "rootfs.diff")

Progress = Callable[[PullProgress], object] | None


def child_gc_label(desc: Mapping[str, Any]) -> str:
    """containerd's GC label prefix for a child descriptor (``ChildGCLabels``)."""
    mt = str(desc.get("mediaType", ""))
    if mt in CONFIG_TYPES or mt.endswith("config.v1+json"):
        return "containerd.io/gc.ref.content.config"
    if mt in MANIFEST_TYPES:
        return "containerd.io/gc.ref.content.m."
    if any(h in mt for h in _LAYER_HINTS):
        return "containerd.io/gc.ref.content.l."
    return "containerd.io/gc.ref.content."


def children_labels(children: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Labels on a parent blob that keep ``children`` alive (``SetChildrenMappedLabels``)."""
    labels: dict[str, str] = {}
    counts: dict[str, int] = {}
    for ch in children:
        key = child_gc_label(ch)
        n = counts.get(key, 0)
        counts[key] = n + 1
        if n > 0 or key.endswith("."):
            key = f"{key}{n}"
        labels[key] = str(ch["digest"])
    return labels


class _Archive:
    """Random access to the members of an uncompressed (or gzip-compressed) tar file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar = tarfile.open(path, mode="r:*")
        self.members = {m.name.lstrip("./").lstrip("/"): m for m in self._tar.getmembers() if m.isfile()}

    def has(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str) -> bytes:
        m = self.members.get(name)
        if m is None:
            raise errdefs.NotFoundError(f"{self.path}: no {name!r} in the archive")
        f = self._tar.extractfile(m)
        if f is None:
            raise errdefs.InvalidArgumentError(f"{self.path}: {name!r} is not a file")
        with f:
            return f.read()

    def open(self, name: str) -> IO[bytes]:
        m = self.members[name]
        f = self._tar.extractfile(m)
        assert f is not None
        return f

    def blob_name(self, digest: str) -> str:
        alg, _, hexpart = digest.partition(":")
        return f"blobs/{alg}/{hexpart}"

    def close(self) -> None:
        self._tar.close()


@dataclass
class _Blob:
    desc: dict[str, Any]
    member: str | None  # archive member with the bytes, or None for generated data
    data: bytes | None = None
    labels: dict[str, str] | None = None


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise errdefs.InvalidArgumentError(f"{what}: invalid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise errdefs.InvalidArgumentError(f"{what}: not a JSON object")
    return doc


def _ref_name(annotations: Mapping[str, str], base_name: str | None) -> str:
    name = annotations.get(ANNOTATION_IMAGE_NAME, "")
    if name:
        return name
    ref = annotations.get(ANNOTATION_REF_NAME, "")
    if not ref:
        return ""
    if "/" in ref or "@" in ref or (":" in ref and base_name is None):
        return ref
    prefix = base_name or f"import-{datetime.date.today().isoformat()}"
    return f"{prefix}:{ref}" if not ref.startswith(("sha256:",)) else f"{prefix}@{ref}"


def _plan_oci(
    a: _Archive, platform: Platform | None, base_name: str | None
) -> tuple[list[_Blob], list[ImageInfo]]:
    index = _json(a.read("index.json"), "index.json")
    blobs: dict[str, _Blob] = {}
    images: list[ImageInfo] = []

    def walk(desc: dict[str, Any]) -> None:
        dg = str(desc["digest"])
        if dg in blobs:
            return
        member = a.blob_name(dg)
        if not a.has(member):
            raise errdefs.NotFoundError(f"{a.path}: blob {dg} is referenced but missing")
        blob = _Blob(desc=desc, member=member)
        blobs[dg] = blob
        mt = str(desc.get("mediaType", ""))
        if mt in INDEX_TYPES or mt in MANIFEST_TYPES:
            doc = _json(a.read(member), dg)
            if digest_of(a.read(member)) != dg:
                raise errdefs.DataLossError(f"{a.path}: blob {dg} does not match its digest")
            if mt in INDEX_TYPES or "manifests" in doc:
                kids = [
                    m
                    for m in doc.get("manifests") or []
                    if platform is None or platform.matches(m.get("platform"))
                ]
                kids = [m for m in kids if a.has(a.blob_name(str(m["digest"])))]
            else:
                kids = [doc["config"], *(doc.get("layers") or [])]
            blob.labels = children_labels(kids)
            for k in kids:
                walk(dict(k))

    for m in index.get("manifests") or []:
        walk(dict(m))
        name = _ref_name(m.get("annotations") or {}, base_name)
        if name:
            images.append(ImageInfo(name=name, target=Descriptor.from_oci(m)))
    return list(blobs.values()), images


def _plan_docker(a: _Archive, base_name: str | None) -> tuple[list[_Blob], list[ImageInfo]]:
    entries = json.loads(a.read("manifest.json"))
    if not isinstance(entries, list):
        raise errdefs.InvalidArgumentError(f"{a.path}: manifest.json is not a list")
    blobs: dict[str, _Blob] = {}
    images: list[ImageInfo] = []
    for e in entries:
        config = a.read(e["Config"])
        cdesc: dict[str, Any] = {
            "mediaType": MT_DOCKER_CONFIG,
            "digest": digest_of(config),
            "size": len(config),
        }
        blobs.setdefault(cdesc["digest"], _Blob(desc=cdesc, member=e["Config"]))
        layers = []
        for name in e.get("Layers") or []:
            head = a.open(name).read(2)
            mt = MT_DOCKER_LAYER_GZIP if head == b"\x1f\x8b" else MT_DOCKER_LAYER
            data = a.read(name)
            ldesc: dict[str, Any] = {"mediaType": mt, "digest": digest_of(data), "size": len(data)}
            blobs.setdefault(ldesc["digest"], _Blob(desc=ldesc, member=name))
            layers.append(ldesc)
        manifest = {"schemaVersion": 2, "mediaType": MT_DOCKER_MANIFEST, "config": cdesc, "layers": layers}
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        mdesc: dict[str, Any] = {"mediaType": MT_DOCKER_MANIFEST, "digest": digest_of(raw), "size": len(raw)}
        blobs[mdesc["digest"]] = _Blob(
            desc=mdesc, member=None, data=raw, labels=children_labels([cdesc, *layers])
        )
        for tag in e.get("RepoTags") or []:
            images.append(ImageInfo(name=_docker_name(tag, base_name), target=Descriptor.from_oci(mdesc)))
    return list(blobs.values()), images


def _docker_name(tag: str, base_name: str | None) -> str:
    name, _, t = tag.rpartition(":")
    if not name:
        name, t = tag, "latest"
    if "/" not in name:
        name = f"library/{name}"
    if "." not in name.split("/")[0] and ":" not in name.split("/")[0] and name.split("/")[0] != "localhost":
        name = f"docker.io/{name}"
    del base_name
    return f"{name}:{t}"


async def import_archive(
    client: Client,
    path: str | Path,
    *,
    base_name: str | None = None,
    index_name: str | None = None,
    platform: Platform | None = None,
    all_platforms: bool = False,
    unpack: bool = True,
    snapshotter: str | None = None,
    progress: Progress = None,
) -> list[ImageInfo]:
    """Import the images of an OCI layout or Docker archive at ``path``; the image records made."""
    from arun.client.unpack import unpack as unpack_image

    p = Path(path)
    try:
        a = await asyncio.to_thread(_Archive, p)
    except FileNotFoundError as e:
        raise errdefs.NotFoundError(f"archive {str(p)!r} does not exist") from e
    except (tarfile.TarError, OSError) as e:
        raise errdefs.InvalidArgumentError(f"{p}: not a tar archive: {e}") from e
    try:
        plat = None if all_platforms else (platform or default_platform())
        if a.has("index.json"):
            blobs, images = await asyncio.to_thread(_plan_oci, a, plat, base_name)
        elif a.has("manifest.json"):
            blobs, images = await asyncio.to_thread(_plan_docker, a, base_name)
        else:
            raise errdefs.InvalidArgumentError(
                f"{p}: neither an OCI layout (index.json) nor a Docker archive"
            )
        if index_name:
            index_doc: dict[str, Any] = {
                "schemaVersion": 2,
                "mediaType": MT_OCI_INDEX,
                "manifests": [i.target.to_oci() for i in images],
            }
            raw = json.dumps(index_doc, separators=(",", ":")).encode()
            idesc = {"mediaType": MT_OCI_INDEX, "digest": digest_of(raw), "size": len(raw)}
            blobs.append(
                _Blob(desc=idesc, member=None, data=raw, labels=children_labels(index_doc["manifests"]))
            )
            images.append(ImageInfo(name=index_name, target=Descriptor.from_oci(idesc)))
        if not images:
            raise errdefs.InvalidArgumentError(f"{p}: no named image in the archive (use a base name)")
        async with client.lease():
            # Leaves first, then parents children-first: a parent's GC labels never point at
            # content that is not in yet (all of it is under the lease either way).
            order = [b for b in blobs if not b.labels] + [b for b in reversed(blobs) if b.labels]
            for blob in order:
                dg = str(blob.desc["digest"])
                size = int(blob.desc["size"])
                body: bytes | AsyncIterator[bytes]
                if blob.data is not None:
                    body = blob.data
                elif size <= SMALL_BLOB:
                    body = await asyncio.to_thread(a.read, blob.member or "")
                    if len(body) != size or digest_of(body) != dg:
                        raise errdefs.DataLossError(f"{p}: blob {dg} does not match its descriptor")
                else:
                    # Big layers stream from the archive; the store checks size and digest on commit.
                    body = _member_chunks(a, blob.member or "")
                if progress:
                    progress(PullProgress(dg, "importing", 0, size))
                try:
                    wrote = await client.content.write(body, expected=dg, size=size, labels=blob.labels)
                except errdefs.FailedPreconditionError as e:
                    raise errdefs.DataLossError(f"{p}: blob {dg} does not match its descriptor: {e}") from e
                if progress:
                    progress(PullProgress(dg, "done" if wrote else "exists", size, size))
            made = [await client.images.put(img) for img in images]
            if unpack:
                seen: set[str] = set()
                for img in made:
                    if img.target.digest in seen:
                        continue
                    seen.add(img.target.digest)
                    try:
                        m = await resolve_manifest(client, img.target, plat)
                    except errdefs.NotFoundError:
                        continue  # an index without this platform
                    await unpack_image(client, m, snapshotter, progress)
        return made
    finally:
        a.close()


SMALL_BLOB = 1 << 20


async def _member_chunks(a: _Archive, member: str, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(a.open, member)
    try:
        while True:
            data = await asyncio.to_thread(f.read, chunk)
            if not data:
                return
            yield data
    finally:
        f.close()


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o444
    info.mtime = 0
    return info.tobuf(format=tarfile.PAX_FORMAT)


async def export_archive(
    client: Client,
    out: str | Path | IO[bytes],
    names: Sequence[str],
    *,
    platform: Platform | None = None,
    all_platforms: bool = False,
) -> int:
    """Write an OCI layout tar of the named images to ``out``; bytes written.

    Only the manifests of ``platform`` (this machine's by default) are followed
    inside an index unless ``all_platforms``; the index itself is kept whole.
    """
    if not names:
        raise errdefs.InvalidArgumentError("export: no image names given")
    plat = None if all_platforms else (platform or default_platform())
    infos = [await client.images.get(n) for n in names]
    order: list[Descriptor] = []
    seen: set[str] = set()

    async def walk(d: Descriptor) -> None:
        if d.digest in seen:
            return
        seen.add(d.digest)
        order.append(d)
        if d.media_type in INDEX_TYPES or d.media_type in MANIFEST_TYPES:
            doc = json.loads(await client.content.read(d.digest))
            if "manifests" in doc:
                for m in doc["manifests"]:
                    if plat is not None and not plat.matches(m.get("platform")):
                        continue
                    child = Descriptor.from_oci(m)
                    if await client.content.exists(child.digest):
                        await walk(child)
            else:
                for c in [doc["config"], *(doc.get("layers") or [])]:
                    await walk(Descriptor.from_oci(c))

    for info in infos:
        await walk(info.target)
    index = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [
            {
                **info.target.to_oci(),
                "annotations": {
                    **dict(info.target.annotations),
                    ANNOTATION_IMAGE_NAME: info.name,
                    ANNOTATION_REF_NAME: info.name.rpartition(":")[2] if ":" in info.name else info.name,
                },
            }
            for info in infos
        ],
    }
    if isinstance(out, str | Path):
        f: IO[bytes] = await asyncio.to_thread(open, out, "wb")
        own = True
    else:
        f, own = out, False
    written = 0
    try:

        def put(b: bytes) -> None:
            nonlocal written
            f.write(b)
            written += len(b)

        for name, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index, separators=(",", ":")).encode()),
        ):
            put(_tar_header(name, len(data)) + data + b"\0" * (-len(data) % 512))
        for d in order:
            alg, _, hexpart = d.digest.partition(":")
            put(_tar_header(f"blobs/{alg}/{hexpart}", d.size))
            n = 0
            async for chunk in client.content.chunks(d.digest):
                put(chunk)
                n += len(chunk)
            if n != d.size:
                raise errdefs.DataLossError(
                    f"export: blob {d.digest} has {n} bytes, descriptor says {d.size}"
                )
            put(b"\0" * (-n % 512))
        put(b"\0" * 1024)
    finally:
        if own:
            f.close()
    return written


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
        g.write(data)
    return buf.getvalue()
