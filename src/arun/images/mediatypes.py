"""Media types of image content and what they say about a blob (kind, compression); the
constants and ``layer_compression`` (what the differ can unpack) are ``arun.core.mediatypes``'s."""

from __future__ import annotations

from arun.core.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER_GZIP,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_ZSTD,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_NONDIST,
    OCI_LAYER_NONDIST_GZIP,
    OCI_LAYER_NONDIST_ZSTD,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Compression,
    layer_compression,
)

OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar"
CONTAINERD_CHECKPOINT = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
CONTAINERD_CHECKPOINT_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"

__all__ = [
    "CONTAINERD_CHECKPOINT",
    "CONTAINERD_CHECKPOINT_CONFIG",
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_FOREIGN_LAYER_GZIP",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_ZSTD",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V1",
    "MANIFEST_ACCEPT",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDIST",
    "OCI_LAYER_NONDIST_GZIP",
    "OCI_LAYER_NONDIST_ZSTD",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "Compression",
    "child_gc_label",
    "is_config",
    "is_index",
    "is_known_config",
    "is_layer",
    "is_manifest",
    "is_non_distributable",
    "layer_compression",
]

# What a registry may answer for a manifest request (containerd's resolve Accept header).
MANIFEST_ACCEPT = ", ".join([DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX, "*/*"])


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
