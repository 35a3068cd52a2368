"""Snapshots: the types and the interface of a snapshotter.

A snapshotter keeps filesystem trees in parent chains, as containerd's
``snapshots`` package does:

* ``prepare(key, parent)`` makes an *active* (writable) snapshot on top of a
  committed parent; ``view(key, parent)`` a read-only one;
* ``commit(name, key)`` turns an active snapshot into an immutable
  *committed* one that can be the parent of others;
* the snapshotter returns *mount specs* (``arun.core.mount.Mount``); the
  client mounts them where it wants the tree.

Keys are free-form non-empty strings (containerd uses e.g.
``"extract-<nanos> <chainID>"``). Snapshotters are namespace-unaware: the
metadata layer maps namespaced keys onto backend keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Protocol, runtime_checkable

from arun.core.mount import Mount

__all__ = [
    "Cleaner",
    "Info",
    "Kind",
    "Snapshotter",
    "Usage",
]


class Kind(IntEnum):
    """Snapshot kinds, numbered as containerd's ``snapshots.Kind`` (and its proto)."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    @classmethod
    def parse(cls, s: str) -> Kind:
        """``"view"``/``"active"``/``"committed"`` in any case; anything else is UNKNOWN."""
        kinds = {"view": cls.VIEW, "active": cls.ACTIVE, "committed": cls.COMMITTED}
        return kinds.get(s.lower(), cls.UNKNOWN)

    def __str__(self) -> str:
        return self.name.capitalize()


@dataclass
class Info:
    """What the snapshotter knows about one snapshot (name is the key, or the committed name)."""

    name: str
    kind: Kind
    parent: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created: datetime | None = None
    updated: datetime | None = None


@dataclass(frozen=True)
class Usage:
    """Resources a snapshot uses on disk: distinct inodes and bytes in allocated blocks."""

    inodes: int = 0
    size: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.inodes + other.inodes, self.size + other.size)


@runtime_checkable
class Snapshotter(Protocol):
    """containerd's ``snapshots.Snapshotter`` (Walk without filters; Close included).

    Errors: unknown key → NotFoundError; key already used → AlreadyExistsError;
    parent not committed or empty key → InvalidArgumentError; commit of a
    non-active snapshot, mounts of a committed one, or removing a snapshot
    that has children → FailedPreconditionError.
    """

    async def stat(self, key: str) -> Info: ...

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Replace ``labels`` (no fieldpaths, or ``"labels"``) or single ``labels.<k>`` entries.

        Any other field path is InvalidArgumentError. Returns the stored info.
        """
        ...

    async def usage(self, key: str) -> Usage:
        """Committed: the usage recorded at commit. Active: measured now."""
        ...

    async def mounts(self, key: str) -> list[Mount]:
        """Mount specs of an active or view snapshot."""
        ...

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create the active snapshot ``key`` on the committed ``parent`` (or empty)."""
        ...

    async def view(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create the read-only snapshot ``key`` of the committed ``parent``."""
        ...

    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        """Commit the active snapshot ``key`` as ``name``; ``key`` is gone afterwards.

        Labels of the committed snapshot are ``labels`` (not inherited from the active one).
        """
        ...

    async def remove(self, key: str) -> None: ...

    def walk(self) -> AsyncIterator[Info]:
        """Every snapshot, in no particular order. Filtering is the caller's business."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Cleaner(Protocol):
    """Optional: remove on-disk leftovers that the snapshotter's metadata no longer references."""

    async def cleanup(self) -> None: ...
