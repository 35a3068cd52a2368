"""Media types of image content and what they say about a blob (kind, compression)."""

from __future__ import annotations

from enum import Enum

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"

CONTAINERD_CHECKPOINT = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
CONTAINERD_CHECKPOINT_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"


class Compression(Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


_LAYERS: dict[str, Compression] = {
    OCI_LAYER: Compression.NONE,
    OCI_LAYER_NONDIST: Compression.NONE,
    DOCKER_LAYER: Compression.NONE,
    DOCKER_FOREIGN_LAYER: Compression.NONE,
    OCI_LAYER_GZIP: Compression.GZIP,
    OCI_LAYER_NONDIST_GZIP: Compression.GZIP,
    DOCKER_LAYER_GZIP: Compression.GZIP,
    DOCKER_FOREIGN_LAYER_GZIP: Compression.GZIP,
    OCI_LAYER_ZSTD: Compression.ZSTD,
    OCI_LAYER_NONDIST_ZSTD: Compression.ZSTD,
    DOCKER_LAYER_ZSTD: Compression.ZSTD,
}

# What a registry may answer for a manifest request (containerd's resolve Accept header).
MANIFEST_ACCEPT = ", ".join([DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX, "*/*"])


def layer_compression(media_type: str) -> Compression | None:
    """The compression a layer media type declares; None if it is not a layer type we
    can unpack (encrypted and unknown layers included)."""
    return _LAYERS.get(media_type)


def is_index(media_type: str) -> bool:
    return media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST)


def is_manifest(media_type: str) -> bool:
    return media_type in (OCI_MANIFEST, DOCKER_MANIFEST)


def is_config(media_type: str) -> bool:
    return media_type in (OCI_CONFIG, DOCKER_CONFIG)


def is_known_config(media_type: str) -> bool:
    return is_config(media_type) or media_type in (CONTAINERD_CHECKPOINT, CONTAINERD_CHECKPOINT_CONFIG)


def is_layer(media_type: str) -> bool:
    """Any layer type, including ones we cannot unpack (``+encrypted`` …)."""
    if media_type.startswith("application/vnd.oci.image.layer."):
        return True
    return media_type.split("+", 1)[0] in (
        DOCKER_LAYER,
        DOCKER_LAYER_GZIP,
        DOCKER_FOREIGN_LAYER,
        DOCKER_FOREIGN_LAYER_GZIP,
        DOCKER_LAYER_ZSTD,
    )


def is_non_distributable(media_type: str) -> bool:
    return media_type.startswith(
        "application/vnd.oci.image.layer.nondistributable."
    ) or media_type.startswith("application/vnd.docker.image.rootfs.foreign.")


def child_gc_label(media_type: str) -> str:
    """The GC label prefix a parent uses to reference a child of this type (containerd's
    ``ChildGCLabels``): a key ending in ``.`` gets the child's index appended."""
    if is_known_config(media_type):
        return "containerd.io/gc.ref.content.config"
    if is_manifest(media_type):
        return "containerd.io/gc.ref.content.m."
    if is_layer(media_type):
        return "containerd.io/gc.ref.content.l."
    return "containerd.io/gc.ref.content."
