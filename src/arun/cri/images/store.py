"""CRI images over the metadata image store.

An image record is a *name* pointing at a manifest (or index). CRI groups
records by *image id* — the digest of the image config — and reports each
group's names as repo tags (``name:tag``) and repo digests
(``name@sha256:…``); the id itself is also recorded as a name, as containerd
does, so that ``ctr -n k8s.io images ls`` shows what kubelet sees.

What the content says about a target (config, chain id, size) never changes
for a digest, so it is computed once and cached.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from arun import platforms
from arun import reference as refs
from arun.api.cri.runtime.v1 import api_pb2
from arun.core.content import Descriptor
from arun.core.images import Image
from arun.errdefs import InvalidArgumentError, NotFoundError
from arun.images import mediatypes as mt
from arun.images.manifest import chain_ids, parse_config, parse_index, parse_manifest

log = logging.getLogger(__name__)

LABEL_IMAGE = "io.cri-containerd.image"
LABEL_IMAGE_MANAGED = "managed"
LABEL_PINNED = "io.cri-containerd.pinned"
LABEL_PINNED_VALUE = "pinned"

_MAX_DOC = 8 << 20


class ContentReader(Protocol):
    async def reader_at(self, desc: Descriptor) -> Any: ...


class ImageRecords(Protocol):
    async def get(self, name: str) -> Image: ...

    async def list(self, *filters: str) -> list[Image]: ...

    async def create(self, image: Image) -> Image: ...

    async def update(self, image: Image, *fieldpaths: str) -> Image: ...

    async def delete(self, name: str, *, target: Descriptor | None = None) -> None: ...


@dataclass(frozen=True)
class ImageDetails:
    """What the content of one target says."""

    id: str  # sha256:<config digest>
    target: Descriptor
    manifest: Descriptor
    config_desc: Descriptor
    config: dict[str, Any]
    diff_ids: tuple[str, ...]
    chain_id: str
    size: int

    @property
    def image_config(self) -> dict[str, Any]:
        cfg = self.config.get("config") or {}
        return cfg if isinstance(cfg, dict) else {}


@dataclass
class CRIImage:
    details: ImageDetails
    references: list[str] = field(default_factory=list)
    pinned: bool = False

    @property
    def id(self) -> str:
        return self.details.id

    def repo_tags(self) -> list[str]:
        out = []
        for r in self.references:
            if r.startswith("sha256:"):
                continue
            try:
                ref = refs.parse_normalized(r)
            except InvalidArgumentError:
                continue
            if ref.tag and not ref.digest:
                out.append(str(ref))
        return sorted(out)

    def repo_digests(self) -> list[str]:
        out = []
        for r in self.references:
            if r.startswith("sha256:"):
                continue
            try:
                ref = refs.parse_normalized(r)
            except InvalidArgumentError:
                continue
            if ref.digest:
                out.append(f"{ref.name}@{ref.digest}")
        return sorted(out)

    def to_proto(self) -> api_pb2.Image:
        img = api_pb2.Image(
            id=self.id,
            repo_tags=self.repo_tags(),
            repo_digests=self.repo_digests(),
            size=self.details.size,
            pinned=self.pinned,
        )
        img.spec.image = self.id
        user = str(self.details.image_config.get("User") or "")
        if user:
            name = user.split(":", 1)[0]
            if name.isdigit():
                img.uid.value = int(name)
            else:
                img.username = name
        return img


def _platform_matcher() -> platforms.Matcher:
    return platforms.default()


class ImageIndex:
    """Reads CRI images from the image records of the current namespace."""

    def __init__(self, records: ImageRecords, content: ContentReader) -> None:
        self.records = records
        self.content = content
        self._details: dict[str, ImageDetails] = {}
        self._lock = asyncio.Lock()

    async def _read(self, desc: Descriptor) -> bytes:
        if desc.size > _MAX_DOC:
            raise InvalidArgumentError(f"{desc.digest}: document too large ({desc.size} bytes)")
        ra = await self.content.reader_at(desc)
        try:
            data: bytes = await ra.read_at(0, desc.size)
        finally:
            await ra.close()
        return data

    async def details(self, target: Descriptor) -> ImageDetails:
        got = self._details.get(target.digest)
        if got is not None:
            return got
        size = 0
        manifest_desc = target
        if mt.is_index(target.media_type):
            index = parse_index(await self._read(target), target.media_type)
            size += target.size
            chosen = index.select(_platform_matcher())
            if not chosen:
                raise NotFoundError(f"image {target.digest}: no manifest for this platform")
            manifest_desc = chosen[0]
        manifest = parse_manifest(await self._read(manifest_desc), manifest_desc.media_type)
        config_bytes = await self._read(manifest.config)
        cfg = parse_config(config_bytes)
        diff_ids = tuple(cfg.diff_ids)
        chain = chain_ids(list(diff_ids))
        size += manifest_desc.size + manifest.config.size + sum(layer.size for layer in manifest.layers)
        details = ImageDetails(
            id=manifest.config.digest,
            target=target,
            manifest=manifest_desc,
            config_desc=manifest.config,
            config=dict(cfg.raw) if cfg.raw else json.loads(config_bytes),
            diff_ids=diff_ids,
            chain_id=chain[-1] if chain else "",
            size=size,
        )
        self._details[target.digest] = details
        return details

    async def all(self) -> list[CRIImage]:
        """Every image of the namespace, grouped by image id."""
        records = await self.records.list()
        by_id: dict[str, CRIImage] = {}
        for rec in records:
            try:
                d = await self.details(rec.target)
            except Exception as e:  # a record whose content is gone or unreadable is skipped
                log.debug("image %s: %s", rec.name, e)
                continue
            img = by_id.get(d.id)
            if img is None:
                img = by_id[d.id] = CRIImage(d)
            img.references.append(rec.name)
            if rec.labels.get(LABEL_PINNED) == LABEL_PINNED_VALUE:
                img.pinned = True
        return list(by_id.values())

    async def by_id(self, image_id: str) -> CRIImage | None:
        found = [i for i in await self.all() if i.id == image_id]
        return found[0] if found else None

    async def resolve(self, ref_or_id: str) -> CRIImage | None:
        """containerd's LocalResolve: an image id (full, ``sha256:`` prefix or bare hex prefix),
        or a reference normalised as docker does; None if there is no such image."""
        if not ref_or_id:
            raise InvalidArgumentError("image reference must not be empty")
        images = await self.all()
        wanted = ref_or_id
        hexpart = wanted[len("sha256:") :] if wanted.startswith("sha256:") else wanted
        is_hex = bool(hexpart) and all(c in "0123456789abcdef" for c in hexpart)
        if is_hex and (wanted.startswith("sha256:") or len(hexpart) >= 12 or len(hexpart) == 64):
            matches = [i for i in images if i.id[len("sha256:") :].startswith(hexpart)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidArgumentError(f"image id prefix {ref_or_id!r} is ambiguous")
            if wanted.startswith("sha256:"):
                return None
        try:
            name = str(refs.parse_docker_ref(ref_or_id))
        except InvalidArgumentError:
            return None
        for i in images:
            if name in i.references:
                return i
        return None

    async def find(self, ref_or_id: str) -> CRIImage | None:
        """Like :meth:`resolve`, without listing every image when the reference names a record
        (a full id or a normalised name): what the pod and container paths need. The image's
        ``references`` then hold only that name."""
        name = ""
        hexpart = ref_or_id.removeprefix("sha256:")
        if ref_or_id.startswith("sha256:") and len(hexpart) == 64:
            name = ref_or_id
        else:
            try:
                name = str(refs.parse_docker_ref(ref_or_id))
            except InvalidArgumentError:
                name = ""
        if name:
            try:
                rec = await self.records.get(name)
            except NotFoundError:
                rec = None
            if rec is not None:
                try:
                    return CRIImage(await self.details(rec.target), [rec.name])
                except Exception as e:
                    log.debug("image %s: %s", rec.name, e)
        return await self.resolve(ref_or_id)

    def forget(self, target_digest: str) -> None:
        self._details.pop(target_digest, None)


def references_for(ref: refs.Reference, target_digest: str, image_id: str) -> list[str]:
    """The record names a pull of ``ref`` creates: the id, the repo tag (if any) and the
    repo digest (containerd's getRepoDigestAndTag)."""
    out = [image_id]
    if ref.tag and not ref.digest:
        out.append(f"{ref.name}:{ref.tag}")
    out.append(f"{ref.name}@{target_digest}")
    return out


async def ensure_records(
    records: ImageRecords, names: Sequence[str], target: Descriptor, labels: dict[str, str]
) -> None:
    """Create (or repoint) image records ``names`` at ``target``."""
    for name in names:
        img = Image(name=name, target=target, labels=dict(labels))
        try:
            existing = await records.get(name)
        except NotFoundError:
            try:
                await records.create(img)
                continue
            except Exception as e:
                from arun.errdefs import AlreadyExistsError

                if not isinstance(e, AlreadyExistsError):
                    raise
                existing = await records.get(name)
        if existing.target.digest != target.digest or any(
            existing.labels.get(k) != v for k, v in labels.items()
        ):
            merged = dict(existing.labels)
            merged.update(labels)
            await records.update(Image(name=name, target=target, labels=merged), "target", "labels")
