"""Content: the types and interfaces of a digest-addressed blob store.

This mirrors containerd's ``content`` package: a store hands out readers by
descriptor, writers by *ref* (a client-chosen name for one ingest that can be
resumed after a disconnect), and keeps committed blobs under their digest.

Nothing here does I/O. Implementations:

* ``arun.content.local.LocalStore`` — the backend on disk, namespace-unaware.
* the metadata layer wraps a backend store, adds namespaces and labels, and
  implements the same ``ContentStore`` protocol.

Digests are plain strings in the OCI form ``<algorithm>:<hex>``; the helpers
below validate and compute them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from arun.errdefs import InvalidArgumentError

__all__ = [
    "CANONICAL",
    "ContentStore",
    "Descriptor",
    "Info",
    "IngestManager",
    "Ingester",
    "Manager",
    "Platform",
    "Provider",
    "ReaderAt",
    "Status",
    "Writer",
    "digest_bytes",
    "digest_of",
    "digest_string",
    "hasher",
    "parse_digest",
    "validate_digest",
]

# The canonical algorithm, as go-digest's ``digest.Canonical``.
CANONICAL = "sha256"

# Algorithms go-digest knows, with the length of their hex encoding.
_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_HEX_RE = re.compile(r"^[a-f0-9]+$")


def parse_digest(digest: str) -> tuple[str, str]:
    """Split a digest into ``(algorithm, hex)`` after validating it.

    Raises InvalidArgumentError for anything go-digest's ``Validate`` would
    reject: a malformed string, an unknown algorithm, a wrong length or
    upper-case hex.
    """
    m = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
    if m is None:
        raise InvalidArgumentError(f"invalid digest {digest!r}: invalid checksum digest format")
    alg, hex_ = m.group(1), m.group(2)
    want = _ALGORITHMS.get(alg)
    if want is None:
        raise InvalidArgumentError(f"invalid digest {digest!r}: unsupported digest algorithm")
    if len(hex_) != want or not _HEX_RE.match(hex_):
        raise InvalidArgumentError(f"invalid digest {digest!r}: invalid checksum digest length or encoding")
    return alg, hex_


def validate_digest(digest: str) -> str:
    """Return ``digest`` if valid, else raise InvalidArgumentError."""
    parse_digest(digest)
    return digest


def hasher(algorithm: str = CANONICAL) -> hashlib._Hash:
    """A fresh hashlib object for ``algorithm`` (one go-digest supports)."""
    if algorithm not in _ALGORITHMS:
        raise InvalidArgumentError(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def digest_of(h: hashlib._Hash) -> str:
    """The digest string of a hashlib object's current state."""
    return f"{h.name}:{h.hexdigest()}"


def digest_bytes(data: bytes, algorithm: str = CANONICAL) -> str:
    h = hasher(algorithm)
    h.update(data)
    return digest_of(h)


def digest_string(s: str, algorithm: str = CANONICAL) -> str:
    """Digest of the UTF-8 bytes of ``s`` (go-digest's ``FromString``)."""
    return digest_bytes(s.encode(), algorithm)


@dataclass(frozen=True)
class Platform:
    """An OCI platform (``architecture``/``os`` and the optional refinements)."""

    architecture: str
    os: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    platform: Platform | None = None


@dataclass
class Info:
    """What a store knows about one committed blob.

    ``labels`` is empty in the backend store; the metadata layer keeps them.
    """

    digest: str
    size: int
    created_at: datetime
    updated_at: datetime
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Status:
    """Progress of one ingest. ``offset`` is where a resumed write continues."""

    ref: str
    offset: int
    total: int
    started_at: datetime
    updated_at: datetime
    expected: str = ""


@runtime_checkable
class ReaderAt(Protocol):
    """Random-access reads of one blob; close it when done."""

    @property
    def size(self) -> int: ...

    async def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset``; fewer only at the end, ``b""`` past it."""
        ...

    async def close(self) -> None: ...


class Provider(Protocol):
    async def reader_at(self, desc: Descriptor) -> ReaderAt:
        """A reader for ``desc.digest``; NotFoundError if it is not committed."""
        ...


@runtime_checkable
class Writer(Protocol):
    """One open ingest. Only one writer may hold a ref at a time.

    ``close`` keeps the ingest so a later writer on the same ref resumes at
    the current offset; ``commit`` verifies and moves the data into the store.
    """

    async def write(self, data: bytes) -> int:
        """Append ``data`` at the current offset; returns ``len(data)``."""
        ...

    def digest(self) -> str:
        """Digest of everything written so far (including resumed data)."""
        ...

    async def commit(self, size: int, expected: str = "", *, labels: Mapping[str, str] | None = None) -> None:
        """Verify and commit.

        ``size`` > 0 must equal the bytes written, and ``expected`` (if given)
        must equal ``digest()``: a mismatch is FailedPreconditionError and
        nothing is committed (the ingest stays, for a resume or an abort). A
        blob that is already present is AlreadyExistsError and the ingest is
        removed. The writer is closed afterwards in every case. ``labels`` are
        for stores that keep labels; the backend ignores them.
        """
        ...

    async def status(self) -> Status: ...

    async def truncate(self, size: int) -> None:
        """Only ``truncate(0)`` is supported: restart the ingest from empty."""
        ...

    async def close(self) -> None: ...


class Ingester(Protocol):
    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> Writer:
        """Open (or resume) the ingest ``ref``.

        ``expected`` already committed → AlreadyExistsError; ``ref`` held by
        another open writer → UnavailableError; empty ref → InvalidArgumentError.
        """
        ...


class Manager(Protocol):
    async def info(self, digest: str) -> Info: ...

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Update mutable fields (``labels``, ``labels.<key>``)."""
        ...

    def walk(self) -> AsyncIterator[Info]:
        """Every committed blob. Filtering is the caller's business."""
        ...

    async def delete(self, digest: str) -> None: ...


class IngestManager(Protocol):
    async def status(self, ref: str) -> Status: ...

    async def list_statuses(self) -> list[Status]:
        """Every ingest in progress (filtering is the caller's business)."""
        ...

    async def abort(self, ref: str) -> None:
        """Remove the ingest ``ref`` and its data; NotFoundError if absent."""
        ...


@runtime_checkable
class ContentStore(Manager, Provider, IngestManager, Ingester, Protocol):
    """A full content store (containerd's ``content.Store``)."""
