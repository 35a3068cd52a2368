"""Build an OCI image archive (the tar ``ctr images import`` reads) in Python.

The archive is an OCI image layout: ``oci-layout``, ``index.json`` and
``blobs/sha256/<hex>``. The default image has two gzip layers: a busybox-static
root filesystem (``/bin/busybox`` and a few links) and a small layer on top,
so imports exercise a parent chain::

    img = build_archive(tmp_path / "busybox.tar", "docker.io/library/arun-test:latest")
    ctr("images", "import", "--base-name", "docker.io/library/arun-test", str(img.path))

``ArchiveImage`` reports every digest a test may look for: blobs, diff ids and
chain ids (the committed snapshot names after unpacking).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
BUSYBOX = Path("/bin/busybox")
# A fixed time so that the same input gives the same bytes.
MTIME = 1_700_000_000


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def goarch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        platform.machine(), platform.machine()
    )


@dataclass(frozen=True)
class Entry:
    """One tar member: ``kind`` is ``file``, ``dir`` or ``symlink`` (``data`` is the link target)."""

    path: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644


def busybox_rootfs() -> list[Entry]:
    return [
        Entry("bin", "dir", mode=0o755),
        Entry("bin/busybox", "file", BUSYBOX.read_bytes(), 0o755),
        Entry("bin/sh", "symlink", b"busybox"),
        Entry("bin/ls", "symlink", b"busybox"),
        Entry("bin/cat", "symlink", b"busybox"),
        Entry("etc", "dir", mode=0o755),
        Entry("etc/os-release", "file", b"NAME=arun-test\n"),
        Entry("tmp", "dir", mode=0o1777),
    ]


def top_layer() -> list[Entry]:
    return [Entry("etc/arun-test", "file", b"hello from the top layer\n")]


def layer_tar(entries: Sequence[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.mtime = MTIME
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif e.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e.data.decode()
                info.mode = 0o777
                tf.addfile(info)
            else:
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


@dataclass
class ArchiveImage:
    path: Path
    name: str
    manifest: str
    manifest_size: int
    config: str
    layers: list[str]
    diff_ids: list[str]
    blobs: dict[str, bytes] = field(repr=False, default_factory=dict)

    @property
    def chain_ids(self) -> list[str]:
        """Chain ids of the layers: the names of the committed snapshots after unpacking."""
        out: list[str] = []
        for d in self.diff_ids:
            out.append(d if not out else sha256(f"{out[-1]} {d}".encode()))
        return out


def build_archive(
    path: Path, name: str, layers: Sequence[Sequence[Entry]] | None = None, *, ref_name: str = "latest"
) -> ArchiveImage:
    """Write an OCI archive of one image (linux, this machine's architecture) to ``path``."""
    if layers is None:
        layers = [busybox_rootfs(), top_layer()]
    blobs: dict[str, bytes] = {}
    layer_descs: list[dict[str, object]] = []
    layer_digests: list[str] = []
    diff_ids = []
    for entries in layers:
        tar = layer_tar(entries)
        gz = gzip.compress(tar, mtime=MTIME)
        blobs[sha256(gz)] = gz
        diff_ids.append(sha256(tar))
        layer_descs.append({"mediaType": OCI_LAYER_GZIP, "digest": sha256(gz), "size": len(gz)})
        layer_digests.append(sha256(gz))
    config = json.dumps(
        {
            "architecture": goarch(),
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(MTIME)),
        },
        sort_keys=True,
    ).encode()
    blobs[sha256(config)] = config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": layer_descs,
        },
        sort_keys=True,
    ).encode()
    blobs[sha256(manifest)] = manifest
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha256(manifest),
                "size": len(manifest),
                "platform": {"architecture": goarch(), "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": ref_name,
                },
            }
        ],
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:

        def add(member: str, data: bytes) -> None:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mtime = MTIME
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))

        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index).encode())
        for dgst, data in blobs.items():
            add(f"blobs/sha256/{dgst.split(':', 1)[1]}", data)
    return ArchiveImage(
        path=path,
        name=name,
        manifest=sha256(manifest),
        manifest_size=len(manifest),
        config=sha256(config),
        layers=layer_digests,
        diff_ids=diff_ids,
        blobs=blobs,
    )
