"""An in-memory snapshotter with the backend semantics the metadata layer relies
on (parents must be committed, children block removal), for tests without disks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from arun.core.mount import Mount
from arun.core.snapshots import Info, Kind, Usage
from arun.errdefs import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError


class MemorySnapshotter:
    """A namespace-unaware snapshotter in memory (the backend contract, minus disks)."""

    def __init__(self) -> None:
        self.snaps: dict[str, Info] = {}
        self.removed: list[str] = []
        self.cleaned = 0

    def _get(self, key: str) -> Info:
        info = self.snaps.get(key)
        if info is None:
            raise NotFoundError(f"snapshot {key!r}: not found")
        return info

    async def stat(self, key: str) -> Info:
        return replace(self._get(key), labels=dict(self._get(key).labels))

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        cur = self._get(info.name)
        if not fieldpaths or "labels" in fieldpaths:
            cur.labels = dict(info.labels)
        for fp in fieldpaths:
            if fp.startswith("labels."):
                k = fp.removeprefix("labels.")
                if info.labels.get(k):
                    cur.labels[k] = info.labels[k]
                else:
                    cur.labels.pop(k, None)
            elif fp != "labels":
                raise InvalidArgumentError(f"cannot update {fp!r}")
        cur.updated = datetime.now(UTC)
        return await self.stat(info.name)

    async def usage(self, key: str) -> Usage:
        self._get(key)
        return Usage(inodes=1, size=4096)

    async def mounts(self, key: str) -> list[Mount]:
        info = self._get(key)
        if info.kind == Kind.COMMITTED:
            raise FailedPreconditionError("mounts of a committed snapshot")
        return self._mounts(key, info)

    def _mounts(self, key: str, info: Info) -> list[Mount]:
        opt = "ro" if info.kind == Kind.VIEW else "rw"
        return [Mount("bind", f"/fake/{key}", (opt, "rbind"))]

    async def _create(
        self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None
    ) -> list[Mount]:
        if not key:
            raise InvalidArgumentError("empty key")
        if key in self.snaps:
            raise AlreadyExistsError(f"snapshot {key!r}: already exists")
        if parent:
            p = self._get(parent)
            if p.kind != Kind.COMMITTED:
                raise InvalidArgumentError(f"parent {parent!r} is not committed")
        now = datetime.now(UTC)
        info = Info(key, kind, parent, dict(labels or {}), now, now)
        self.snaps[key] = info
        return self._mounts(key, info)

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(Kind.ACTIVE, key, parent, labels)

    async def view(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(Kind.VIEW, key, parent, labels)

    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        info = self._get(key)
        if info.kind != Kind.ACTIVE:
            raise FailedPreconditionError(f"snapshot {key!r} is not active")
        if name in self.snaps:
            raise AlreadyExistsError(f"snapshot {name!r}: already exists")
        del self.snaps[key]
        now = datetime.now(UTC)
        self.snaps[name] = Info(name, Kind.COMMITTED, info.parent, dict(labels or {}), now, now)

    async def remove(self, key: str) -> None:
        self._get(key)
        if any(i.parent == key for i in self.snaps.values()):
            raise FailedPreconditionError(f"snapshot {key!r} has children")
        del self.snaps[key]
        self.removed.append(key)

    async def walk(self) -> AsyncIterator[Info]:
        for info in list(self.snaps.values()):
            yield replace(info, labels=dict(info.labels))

    async def cleanup(self) -> None:
        self.cleaned += 1

    async def close(self) -> None:
        pass
