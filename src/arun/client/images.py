"""Image records and what they point at: index → manifest → config and layers.

``Images`` wraps ``containerd.services.images.v1``; the helpers below walk an
image's content the way containerd's ``images.Manifest``/``RootFS`` do, picking
the manifest for a platform out of an index.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arun import errdefs
from arun.client import _convert
from arun.client.types import Descriptor, ImageInfo

if TYPE_CHECKING:
    from arun.client.client import Client

__all__ = [
    "ImageManifest",
    "Images",
    "Platform",
    "chain_id",
    "default_platform",
    "resolve_manifest",
]

_SERVICE = "/containerd.services.images.v1.Images/"

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
CONFIG_TYPES = (MT_OCI_CONFIG, MT_DOCKER_CONFIG)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """A platform from ``os[/arch[/variant]]`` text, e.g. ``linux/arm64/v8``."""
        parts = text.split("/")
        if len(parts) == 1:
            return cls(os="linux", architecture=_normalize_arch(parts[0])[0])
        if len(parts) not in (2, 3) or not all(parts):
            raise errdefs.InvalidArgumentError(f"platform {text!r}: expected os/arch[/variant]")
        arch, variant = _normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
        return cls(os=parts[0].lower(), architecture=arch, variant=variant)

    def matches(self, doc: Mapping[str, Any] | None) -> bool:
        """Whether an index entry's ``platform`` is this one (a missing platform matches)."""
        if not doc:
            return True
        arch, variant = _normalize_arch(str(doc.get("architecture", "")), str(doc.get("variant", "")))
        if str(doc.get("os", "")).lower() != self.os or arch != self.architecture:
            return False
        return not self.variant or not variant or variant == self.variant


def _normalize_arch(arch: str, variant: str = "") -> tuple[str, str]:
    arch = arch.lower()
    table = {"x86_64": "amd64", "x86-64": "amd64", "i386": "386", "i686": "386", "aarch64": "arm64"}
    arch = table.get(arch, arch)
    if arch == "arm64" and variant in ("8", "v8"):
        variant = ""
    if arch == "armhf":
        arch, variant = "arm", "v7"
    return arch, variant


def default_platform() -> Platform:
    """This machine's platform (linux and its architecture), as pulls and unpacks use it."""
    arch, variant = _normalize_arch(_platform.machine())
    if arch.startswith("armv"):
        arch, variant = "arm", arch[3:5]
    return Platform(os="linux", architecture=arch, variant=variant)


def chain_id(diff_ids: Sequence[str]) -> str:
    """The identity of a stack of layers: the committed snapshot's name (OCI image-spec ChainID)."""
    if not diff_ids:
        raise errdefs.InvalidArgumentError("an image without layers has no chain id")
    current = diff_ids[0]
    for d in diff_ids[1:]:
        current = "sha256:" + hashlib.sha256(f"{current} {d}".encode()).hexdigest()
    return current


@dataclass(frozen=True)
class ImageManifest:
    """One platform's manifest of an image, with its parsed config."""

    descriptor: Descriptor
    manifest: Mapping[str, Any]
    config_descriptor: Descriptor
    config: Mapping[str, Any]
    layers: tuple[Descriptor, ...]

    @property
    def diff_ids(self) -> list[str]:
        """The uncompressed layer digests from the image config, bottom layer first."""
        return list((self.config.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def chain_id(self) -> str:
        """The chain ID of the layers: the snapshot the image unpacks to."""
        return chain_id(self.diff_ids)


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise errdefs.DataLossError(f"{what}: invalid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise errdefs.DataLossError(f"{what}: not a JSON object")
    return doc


async def resolve_manifest(
    client: Client, target: Descriptor, platform: Platform | None = None
) -> ImageManifest:
    """The manifest for ``platform`` (default: this machine's) under ``target``, with its config."""
    plat = platform or default_platform()
    desc = target
    for _ in range(4):  # an index may nest one index (rare); never loop forever
        data = await client.content.read(desc.digest)
        doc = _json(data, desc.digest)
        mt = desc.media_type or str(doc.get("mediaType", ""))
        if mt in INDEX_TYPES or (not mt and "manifests" in doc):
            candidates = [m for m in doc.get("manifests") or [] if plat.matches(m.get("platform"))]
            if not candidates:
                raise errdefs.NotFoundError(f"no manifest for platform {plat} in {desc.digest}")
            desc = Descriptor.from_oci(candidates[0])
            continue
        if mt in MANIFEST_TYPES or (not mt and "config" in doc):
            cdesc = Descriptor.from_oci(doc["config"])
            config = _json(await client.content.read(cdesc.digest), cdesc.digest)
            layers = tuple(Descriptor.from_oci(layer) for layer in doc.get("layers") or [])
            return ImageManifest(desc, doc, cdesc, config, layers)
        raise errdefs.InvalidArgumentError(f"{desc.digest}: unexpected media type {mt!r}")
    raise errdefs.InvalidArgumentError(f"{target.digest}: indexes nested too deep")


class Images:
    """Image records in the client's namespace."""

    def __init__(self, client: Client) -> None:
        self._c = client

    async def list(self, *filters: str) -> list[ImageInfo]:
        """Every image (containerd filter syntax, e.g. ``name~=busybox``); sorted by name."""
        from arun.api.containerd.services.images.v1 import images_pb2

        r = await self._c._unary(
            _SERVICE + "List",
            images_pb2.ListImagesRequest(filters=list(filters)),
            images_pb2.ListImagesResponse,
        )
        return sorted((_convert.image(i) for i in r.images), key=lambda i: i.name)

    async def get(self, name: str) -> ImageInfo:
        """The image called ``name``; NotFoundError if there is none."""
        from arun.api.containerd.services.images.v1 import images_pb2

        r = await self._c._unary(
            _SERVICE + "Get", images_pb2.GetImageRequest(name=name), images_pb2.GetImageResponse
        )
        return _convert.image(r.image)

    async def create(self, image: ImageInfo) -> ImageInfo:
        """Create the image record (AlreadyExistsError when the name is taken)."""
        from arun.api.containerd.services.images.v1 import images_pb2

        msg = images_pb2.Image(
            name=image.name, labels=dict(image.labels), target=_convert.descriptor_pb(image.target)
        )
        r = await self._c._unary(
            _SERVICE + "Create", images_pb2.CreateImageRequest(image=msg), images_pb2.CreateImageResponse
        )
        return _convert.image(r.image)

    async def update(self, image: ImageInfo, *fields: str) -> ImageInfo:
        """Update ``fields`` (``target``, ``labels``, ``labels.<key>``; all when none given)."""
        from google.protobuf import field_mask_pb2

        from arun.api.containerd.services.images.v1 import images_pb2

        msg = images_pb2.Image(
            name=image.name, labels=dict(image.labels), target=_convert.descriptor_pb(image.target)
        )
        req = images_pb2.UpdateImageRequest(image=msg)
        if fields:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(fields)))
        r = await self._c._unary(_SERVICE + "Update", req, images_pb2.UpdateImageResponse)
        return _convert.image(r.image)

    async def put(self, image: ImageInfo) -> ImageInfo:
        """Create the record, or point an existing one at the new target (what import does)."""
        try:
            return await self.update(image, "target")
        except errdefs.NotFoundError:
            return await self.create(image)

    async def delete(self, name: str, *, sync: bool = False) -> None:
        """Remove the record (``sync``: wait for garbage collection); NotFoundError if missing."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.images.v1 import images_pb2

        await self._c._unary(
            _SERVICE + "Delete", images_pb2.DeleteImageRequest(name=name, sync=sync), empty_pb2.Empty
        )

    async def manifest(self, name: str, platform: Platform | None = None) -> ImageManifest:
        """The image's manifest and config for ``platform``."""
        info = await self.get(name)
        return await resolve_manifest(self._c, info.target, platform)

    async def config(self, name: str, platform: Platform | None = None) -> Mapping[str, Any]:
        """The image's OCI config document (``config.Env``, ``rootfs.diff_ids``…)."""
        return (await self.manifest(name, platform)).config

    async def is_unpacked(self, name: str, snapshotter: str | None = None) -> bool:
        """Whether the image's top snapshot exists in ``snapshotter``."""
        m = await self.manifest(name)
        try:
            await self._c.snapshots(snapshotter).stat(m.chain_id)
        except errdefs.NotFoundError:
            return False
        return True

    async def size(self, name: str) -> int:
        """Bytes of the manifest, config and layers for this platform (what ``ctr images ls`` shows)."""
        m = await self.manifest(name)
        return m.descriptor.size + m.config_descriptor.size + sum(layer.size for layer in m.layers)
