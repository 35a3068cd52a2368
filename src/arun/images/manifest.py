"""OCI / Docker schema 2 image documents: descriptors, manifests, indexes, image configs.

``Descriptor`` and ``Platform`` are the core types (``arun.core.content``); matching
platforms is ``arun.platforms``' business (it accepts either platform type).

Parsing validates what pull relies on and rejects the rest with InvalidArgumentError
naming the document: JSON of the right shape, ``schemaVersion`` 2, digests in canonical
form, non-negative sizes, a manifest that is not an index (and vice versa), and as many
``rootfs.diff_ids`` in the config as the manifest has layers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arun import platforms
from arun.core.content import Descriptor, Platform
from arun.errdefs import InvalidArgumentError, UnimplementedError
from arun.images import mediatypes as mt

__all__ = [
    "Descriptor",
    "ImageConfig",
    "Index",
    "Manifest",
    "chain_ids",
    "children_labels",
    "descriptor_from_json",
    "descriptor_to_json",
    "parse_config",
    "parse_index",
    "parse_manifest",
    "validate_digest",
]

_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-f0-9]+)$")


def validate_digest(digest: object, what: str = "digest") -> str:
    """``digest`` if it is a canonical ``alg:hex`` digest of a known algorithm."""
    if not isinstance(digest, str):
        raise InvalidArgumentError(f"{what}: digest must be a string, got {type(digest).__name__}")
    m = _DIGEST_RE.match(digest)
    if m is None or _DIGEST_LENGTHS.get(m.group(1)) != len(m.group(2)):
        raise InvalidArgumentError(f"{what}: invalid digest {digest!r}")
    return digest


def _str_map(obj: object, what: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise InvalidArgumentError(f"{what}: must be an object of strings")
    return dict(obj)


def _platform_from_json(obj: object, what: str) -> Platform | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise InvalidArgumentError(f"{what}: platform must be an object")
    os_, arch = obj.get("os", ""), obj.get("architecture", "")
    variant, osv = obj.get("variant", ""), obj.get("os.version", "")
    feats = obj.get("os.features") or []
    if not all(isinstance(x, str) for x in (os_, arch, variant, osv)) or not isinstance(feats, list):
        raise InvalidArgumentError(f"{what}: malformed platform")
    return Platform(
        architecture=arch, os=os_, variant=variant, os_version=osv, os_features=tuple(map(str, feats))
    )


def descriptor_from_json(obj: object, what: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise InvalidArgumentError(f"{what}: descriptor must be an object")
    media_type = obj.get("mediaType", "")
    if not isinstance(media_type, str):
        raise InvalidArgumentError(f"{what}: mediaType must be a string")
    digest = validate_digest(obj.get("digest"), what)
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgumentError(f"{what}: invalid size {size!r}")
    urls = obj.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise InvalidArgumentError(f"{what}: urls must be a list of strings")
    return Descriptor(
        media_type,
        digest,
        size,
        _str_map(obj.get("annotations"), f"{what}: annotations"),
        tuple(urls),
        _platform_from_json(obj.get("platform"), what),
    )


def descriptor_to_json(d: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
    if d.urls:
        out["urls"] = list(d.urls)
    if d.annotations:
        out["annotations"] = dict(d.annotations)
    if d.platform is not None:
        out["platform"] = platforms.Platform.of(d.platform).to_json()
    return out


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidArgumentError(f"{what}: JSON document must be an object")
    return doc


def _check_schema(doc: Mapping[str, Any], what: str) -> None:
    if doc.get("schemaVersion") != 2:
        if doc.get("schemaVersion") == 1:
            raise UnimplementedError(f"{what}: Docker schema 1 manifests are not supported")
        raise InvalidArgumentError(f"{what}: schemaVersion must be 2, got {doc.get('schemaVersion')!r}")


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None

    def children(self) -> list[Descriptor]:
        return [self.config, *self.layers]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    def children(self) -> list[Descriptor]:
        return list(self.manifests)

    def select(self, matcher: platforms.Matcher, *, limit: int | None = 1) -> list[Descriptor]:
        """The children matching ``matcher``, best first (children without a platform
        are kept last, as containerd does); ``limit`` None keeps all."""
        matched = [d for d in self.manifests if d.platform is None or matcher.match(d.platform)]
        with_platform = [d for d in matched if d.platform is not None]
        without = [d for d in matched if d.platform is None]
        with_platform.sort(key=lambda d: matcher.sort_key(d.platform) if d.platform else (0, 0))
        out = with_platform + without
        return out if limit is None else out[:limit]


def parse_manifest(data: bytes, media_type: str = "", what: str = "manifest") -> Manifest:
    doc = _load(data, what)
    _check_schema(doc, what)
    declared = doc.get("mediaType", "")
    if declared and media_type and declared != media_type:
        raise InvalidArgumentError(f"{what}: mediaType {declared!r} does not match {media_type!r}")
    if "manifests" in doc:
        raise InvalidArgumentError(f"{what}: a manifest must not have 'manifests' (is it an index?)")
    if "config" not in doc:
        raise InvalidArgumentError(f"{what}: missing config")
    config = descriptor_from_json(doc["config"], f"{what} config")
    layers_json = doc.get("layers")
    if not isinstance(layers_json, list):
        raise InvalidArgumentError(f"{what}: layers must be a list")
    layers = tuple(descriptor_from_json(x, f"{what} layer {i}") for i, x in enumerate(layers_json))
    subject = doc.get("subject")
    return Manifest(
        declared or media_type or mt.OCI_MANIFEST,
        config,
        layers,
        _str_map(doc.get("annotations"), f"{what} annotations"),
        descriptor_from_json(subject, f"{what} subject") if subject is not None else None,
    )


def parse_index(data: bytes, media_type: str = "", what: str = "index") -> Index:
    doc = _load(data, what)
    _check_schema(doc, what)
    declared = doc.get("mediaType", "")
    if declared and media_type and declared != media_type:
        raise InvalidArgumentError(f"{what}: mediaType {declared!r} does not match {media_type!r}")
    if "config" in doc or "layers" in doc:
        raise InvalidArgumentError(f"{what}: an index must not have 'config' or 'layers' (is it a manifest?)")
    items = doc.get("manifests")
    if not isinstance(items, list):
        raise InvalidArgumentError(f"{what}: manifests must be a list")
    return Index(
        declared or media_type or mt.OCI_INDEX,
        tuple(descriptor_from_json(x, f"{what} entry {i}") for i, x in enumerate(items)),
        _str_map(doc.get("annotations"), f"{what} annotations"),
    )


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config pull and run need; ``raw`` keeps the whole document."""

    platform: Platform
    diff_ids: tuple[str, ...]
    raw: Mapping[str, Any]


def parse_config(data: bytes, what: str = "image config") -> ImageConfig:
    doc = _load(data, what)
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict):
        raise InvalidArgumentError(f"{what}: missing rootfs")
    if rootfs.get("type") != "layers":
        raise InvalidArgumentError(f"{what}: rootfs type must be 'layers', got {rootfs.get('type')!r}")
    ids = rootfs.get("diff_ids")
    if not isinstance(ids, list):
        raise InvalidArgumentError(f"{what}: rootfs.diff_ids must be a list")
    diff_ids = tuple(validate_digest(d, f"{what} diff_id {i}") for i, d in enumerate(ids))
    plat = _platform_from_json(
        {k: doc[k] for k in ("os", "architecture", "variant", "os.version", "os.features") if k in doc}, what
    )
    assert plat is not None
    return ImageConfig(plat, diff_ids, doc)


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The identity of each layer stack: ``chain[0] = diff[0]``, ``chain[n] =
    sha256(chain[n-1] + " " + diff[n])`` (the OCI image spec's ChainID)."""
    import hashlib

    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def children_labels(children: Sequence[Descriptor]) -> dict[str, str]:
    """The GC reference labels a parent carries for ``children`` (containerd's
    ``SetChildrenMappedLabels`` with ``ChildGCLabels``)."""
    counts: dict[str, int] = {}
    out: dict[str, str] = {}
    for ch in children:
        key = mt.child_gc_label(ch.media_type)
        idx = counts.get(key, 0)
        counts[key] = idx + 1
        if idx > 0 or key.endswith("."):
            key = f"{key}{idx}"
        out[key] = ch.digest
    return out
