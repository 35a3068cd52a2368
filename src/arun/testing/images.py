"""Build OCI and Docker images in Python, and push them with plain registry API calls.

Tests describe layers as lists of entries (files, directories, symlinks, hard links,
whiteouts, opaque directories), choose a compression (gzip, zstd, none) and a manifest
flavour (OCI or Docker schema 2), and get exact bytes and descriptors back. ``push_raw``
seeds a registry with nothing but ``aiohttp`` and the distribution API, independent of
arun's own push code, so pull tests never rely on push.

``expected_tree`` applies the layers to an in-memory model (whiteouts included) and
``read_tree`` reads an unpacked directory into the same form, so a test can compare a
rootfs file by file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import zstandard

__all__ = [
    "BUSYBOX",
    "BuiltImage",
    "BuiltIndex",
    "Entry",
    "Layer",
    "Node",
    "build_image",
    "build_index",
    "busybox_layer",
    "digest_of",
    "dir_",
    "expected_tree",
    "file",
    "hardlink",
    "opaque",
    "push_blob_raw",
    "push_manifest_raw",
    "push_raw",
    "read_tree",
    "symlink",
    "whiteout",
]

BUSYBOX = Path("/bin/busybox")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
_LAYER_TYPES = {
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", "none"): "application/vnd.oci.image.layer.v1.tar",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("docker", "zstd"): "application/vnd.docker.image.rootfs.diff.tar.zstd",
    ("docker", "none"): "application/vnd.docker.image.rootfs.diff.tar",
}

Kind = Literal["file", "dir", "symlink", "hardlink", "whiteout", "opaque"]
Compression = Literal["gzip", "zstd", "none"]
Flavour = Literal["oci", "docker"]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One tar entry. ``path`` is relative (``etc/hosts``); ``target`` is the link target."""

    kind: Kind
    path: str
    data: bytes = b""
    mode: int = 0o644
    target: str = ""
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000


def file(path: str, data: bytes | str, mode: int = 0o644, *, uid: int = 0, gid: int = 0) -> Entry:
    raw = data.encode() if isinstance(data, str) else data
    return Entry("file", path.strip("/"), raw, mode, uid=uid, gid=gid)


def dir_(path: str, mode: int = 0o755, *, uid: int = 0, gid: int = 0) -> Entry:
    return Entry("dir", path.strip("/"), mode=mode, uid=uid, gid=gid)


def symlink(path: str, target: str) -> Entry:
    return Entry("symlink", path.strip("/"), mode=0o777, target=target)


def hardlink(path: str, target: str) -> Entry:
    return Entry("hardlink", path.strip("/"), target=target.strip("/"))


def whiteout(path: str) -> Entry:
    """Deletes ``path`` from lower layers (``dir/.wh.name``)."""
    return Entry("whiteout", path.strip("/"))


def opaque(path: str) -> Entry:
    """Hides everything lower layers put under directory ``path`` (``path/.wh..wh..opq``)."""
    return Entry("opaque", path.strip("/"))


def _tar(entries: Sequence[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            name = e.path
            if e.kind == "whiteout":
                head, _, base = e.path.rpartition("/")
                name = f"{head}/.wh.{base}" if head else f".wh.{base}"
            elif e.kind == "opaque":
                name = f"{e.path}/.wh..wh..opq"
            ti = tarfile.TarInfo(name)
            ti.mtime = e.mtime
            ti.uid, ti.gid = e.uid, e.gid
            ti.uname = ti.gname = ""
            ti.mode = e.mode
            if e.kind == "file":
                ti.type = tarfile.REGTYPE
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
                continue
            if e.kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif e.kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e.target
            elif e.kind == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = e.target
            else:  # whiteouts are empty regular files
                ti.type = tarfile.REGTYPE
                ti.mode = 0o644
                ti.size = 0
            tf.addfile(ti)
    return buf.getvalue()


def compress(data: bytes, compression: Compression) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


@dataclass
class Layer:
    """A layer: its entries and how it is compressed. Bytes are computed once."""

    entries: list[Entry]
    compression: Compression = "gzip"
    # Set to override the media type (e.g. an unknown one for error tests).
    media_type: str = ""
    _tar: bytes | None = field(default=None, repr=False)
    _blob: bytes | None = field(default=None, repr=False)

    @property
    def tar(self) -> bytes:
        if self._tar is None:
            self._tar = _tar(self.entries)
        return self._tar

    @property
    def blob(self) -> bytes:
        if self._blob is None:
            self._blob = compress(self.tar, self.compression)
        return self._blob

    @property
    def diff_id(self) -> str:
        return digest_of(self.tar)

    @property
    def digest(self) -> str:
        return digest_of(self.blob)

    def descriptor(self, flavour: Flavour) -> dict[str, Any]:
        mt = self.media_type or _LAYER_TYPES[(flavour, self.compression)]
        return {"mediaType": mt, "digest": self.digest, "size": len(self.blob)}


def busybox_layer(
    compression: Compression = "gzip", applets: Iterable[str] = ("sh", "ls", "cat", "echo")
) -> Layer:
    """``/bin/busybox`` (static) with a few applet symlinks, plus ``/etc`` and ``/tmp``."""
    data = BUSYBOX.read_bytes()
    entries = [dir_("bin"), file("bin/busybox", data, 0o755)]
    entries += [symlink(f"bin/{a}", "busybox") for a in applets]
    entries += [dir_("etc"), file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), dir_("tmp", 0o1777)]
    return Layer(entries, compression)


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


@dataclass
class BuiltImage:
    """One platform's image: config and manifest bytes, and its layers."""

    layers: list[Layer]
    config: bytes
    manifest: bytes
    flavour: Flavour
    platform: dict[str, str]

    @property
    def manifest_media_type(self) -> str:
        return OCI_MANIFEST if self.flavour == "oci" else DOCKER_MANIFEST

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def config_digest(self) -> str:
        return digest_of(self.config)

    @property
    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.manifest_media_type, "digest": self.digest, "size": len(self.manifest)}

    def blobs(self) -> dict[str, bytes]:
        out = {layer.digest: layer.blob for layer in self.layers}
        out[self.config_digest] = self.config
        return out

    def chain_ids(self) -> list[str]:
        out: list[str] = []
        for layer in self.layers:
            out.append(layer.diff_id if not out else digest_of(f"{out[-1]} {layer.diff_id}".encode()))
        return out


def build_image(
    layers: Sequence[Layer],
    *,
    flavour: Flavour = "oci",
    os: str = "linux",
    architecture: str = "amd64",
    variant: str = "",
    config: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
) -> BuiltImage:
    """Config and manifest for ``layers``; ``config`` is the image config's ``config`` section."""
    platform = {"architecture": architecture, "os": os}
    if variant:
        platform["variant"] = variant
    cfg: dict[str, Any] = {
        "created": "2024-01-01T00:00:00Z",
        **platform,
        "config": dict(config or {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}),
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }
    config_bytes = _canonical(cfg)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if flavour == "oci" else DOCKER_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG if flavour == "oci" else DOCKER_CONFIG,
            "digest": digest_of(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [layer.descriptor(flavour) for layer in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    manifest.update(manifest_extra or {})
    return BuiltImage(list(layers), config_bytes, _canonical(manifest), flavour, platform)


@dataclass
class BuiltIndex:
    images: list[BuiltImage]
    index: bytes
    flavour: Flavour

    @property
    def media_type(self) -> str:
        return OCI_INDEX if self.flavour == "oci" else DOCKER_LIST

    @property
    def digest(self) -> str:
        return digest_of(self.index)

    @property
    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.index)}


def build_index(images: Sequence[BuiltImage], *, flavour: Flavour = "oci") -> BuiltIndex:
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX if flavour == "oci" else DOCKER_LIST,
        "manifests": [{**img.descriptor, "platform": img.platform} for img in images],
    }
    return BuiltIndex(list(images), _canonical(index), flavour)


# -- pushing with nothing but the distribution API ------------------------------------------


async def push_blob_raw(
    session: aiohttp.ClientSession,
    base: str,
    repo: str,
    data: bytes,
    *,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Monolithic upload (POST then PUT ?digest=); returns the digest. Skips existing blobs."""
    dgst = digest_of(data)
    hdrs = dict(headers or {})
    async with session.head(f"{base}/v2/{repo}/blobs/{dgst}", headers=hdrs) as resp:
        if resp.status == 200:
            return dgst
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/", headers=hdrs) as resp:
        if resp.status != 202:
            raise RuntimeError(f"upload start for {repo}: {resp.status} {await resp.text()}")
        location = resp.headers["Location"]
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    async with session.put(
        f"{location}{sep}digest={dgst}",
        data=io.BytesIO(data),
        headers={**hdrs, "Content-Type": "application/octet-stream"},
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"upload of {dgst} to {repo}: {resp.status} {await resp.text()}")
    return dgst


async def push_manifest_raw(
    session: aiohttp.ClientSession,
    base: str,
    repo: str,
    reference: str,
    body: bytes,
    media_type: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> None:
    async with session.put(
        f"{base}/v2/{repo}/manifests/{reference}",
        data=body,
        headers={**(headers or {}), "Content-Type": media_type},
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"manifest {reference} to {repo}: {resp.status} {await resp.text()}")


async def push_raw(
    base: str,
    repo: str,
    tag: str | None,
    image: BuiltImage | BuiltIndex,
    *,
    headers: Mapping[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> str:
    """Push every blob and manifest of ``image`` to ``base`` (``http://host:port``);
    returns the digest of the top manifest or index. ``tag`` None pushes by digest only."""
    own = session is None
    sess = session or aiohttp.ClientSession()
    try:
        images = image.images if isinstance(image, BuiltIndex) else [image]
        for img in images:
            for data in img.blobs().values():
                await push_blob_raw(sess, base, repo, data, headers=headers)
            await push_manifest_raw(
                sess, base, repo, img.digest, img.manifest, img.manifest_media_type, headers=headers
            )
        if isinstance(image, BuiltIndex):
            await push_manifest_raw(
                sess, base, repo, image.digest, image.index, image.media_type, headers=headers
            )
            top, body, mt = image.digest, image.index, image.media_type
        else:
            top, body, mt = image.digest, image.manifest, image.manifest_media_type
        if tag is not None:
            await push_manifest_raw(sess, base, repo, tag, body, mt, headers=headers)
        return top
    finally:
        if own:
            await sess.close()


# -- comparing root filesystems ---------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One path of a root filesystem, as a test compares it."""

    kind: Literal["file", "dir", "symlink"]
    mode: int = 0
    data: bytes = b""
    target: str = ""
    uid: int = 0
    gid: int = 0


def expected_tree(layers: Sequence[Layer]) -> dict[str, Node]:
    """The root filesystem ``layers`` produce, applied in order with OCI whiteout rules."""
    tree: dict[str, Node] = {}

    def remove(path: str) -> None:
        for k in [k for k in tree if k == path or k.startswith(path + "/")]:
            del tree[k]

    for layer in layers:
        for e in layer.entries:
            if e.kind == "whiteout":
                remove(e.path)
                continue
            if e.kind == "opaque":
                for k in [k for k in tree if k.startswith(e.path + "/")]:
                    del tree[k]
                continue
            existing = tree.get(e.path)
            if existing is not None and not (existing.kind == "dir" and e.kind == "dir"):
                remove(e.path)
            if e.kind == "file":
                tree[e.path] = Node("file", e.mode, e.data, uid=e.uid, gid=e.gid)
            elif e.kind == "dir":
                tree[e.path] = Node("dir", e.mode, uid=e.uid, gid=e.gid)
            elif e.kind == "symlink":
                tree[e.path] = Node("symlink", target=e.target, uid=e.uid, gid=e.gid)
            else:  # hardlink: same content as its target
                src = tree[e.target]
                tree[e.path] = src
    return tree


def read_tree(root: str | os.PathLike[str], *, owners: bool = True) -> dict[str, Node]:
    """The tree under ``root`` in the form ``expected_tree`` returns."""
    out: dict[str, Node] = {}
    base = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            st = os.lstat(full)
            uid, gid = (st.st_uid, st.st_gid) if owners else (0, 0)
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = Node("symlink", target=os.readlink(full), uid=uid, gid=gid)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = Node("dir", perm, uid=uid, gid=gid)
            else:
                with open(full, "rb") as f:
                    out[rel] = Node("file", perm, f.read(), uid=uid, gid=gid)
    return out
