"""The native snapshotter: full copies of the parent tree, bind mounts (containerd's ``native``).

Layout under the root: ``metadata.db`` and ``snapshots/<id>``. An active
snapshot (or one without a parent) gets its own directory, a copy of its
parent; a view of a parent gets no directory and mounts the parent read-only.
Every mount is a single ``bind`` with ``rbind`` and ``rw``/``ro``. It needs
no root (owners are only preserved where the caller may set them).

The copy happens outside the metastore step (it can be large): the key and
parent are checked first, the parent copied into ``snapshots/new-*``, and the
row inserted (re-checking everything) in the step that renames the directory
into place.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping

from arun.asyncutil import to_thread_complete
from arun.core.mount import Mount
from arun.core.snapshots import Kind
from arun.errdefs import AlreadyExistsError, ConflictError, InvalidArgumentError, NotFoundError
from arun.fsutil import copy_dir
from arun.snapshots.base import LocalSnapshotter
from arun.snapshots.storage import Snapshot, Transaction

__all__ = ["NativeSnapshotter"]


class NativeSnapshotter(LocalSnapshotter):
    """``Snapshotter`` by copying. Build it with ``await NativeSnapshotter.create(root)``."""

    @classmethod
    async def create(cls, root: str | os.PathLike[str], *, async_remove: bool = False) -> NativeSnapshotter:
        self = cls(root, async_remove=async_remove)
        await self._init()
        return self

    def _usage_dir(self, sid: str) -> str:
        return self._snapshot_dir(sid)

    def _mounts(self, s: Snapshot) -> list[Mount]:
        flag = "ro" if s.kind == Kind.VIEW else "rw"
        source = self._snapshot_dir(s.id if not s.parent_ids or s.kind == Kind.ACTIVE else s.parent_ids[0])
        return [Mount("bind", source, ("rbind", flag))]

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(Kind.ACTIVE, key, parent, labels)

    async def view(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(Kind.VIEW, key, parent, labels)

    async def _create(
        self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None
    ) -> list[Mount]:
        if not key:
            raise InvalidArgumentError("snapshot key must not be empty")

        def precheck(tx: Transaction) -> str:
            try:
                tx.get_info(key)
            except NotFoundError:
                pass
            else:
                raise AlreadyExistsError(f"snapshot {key!r} already exists")
            if not parent:
                return ""
            pid, pinfo, _ = tx.get_info(parent)
            if pinfo.kind != Kind.COMMITTED:
                raise InvalidArgumentError(f"parent {parent!r} is not a committed snapshot")
            return pid

        parent_id = await self._ms.view(precheck)
        tmp = ""
        renamed = False
        try:
            if kind == Kind.ACTIVE or not parent:
                tmp = await asyncio.to_thread(self._new_dir)
                self._inflight.add(tmp)
                if parent_id:
                    await to_thread_complete(copy_dir, self._snapshot_dir(parent_id), tmp)

            def step(tx: Transaction) -> Snapshot:
                s = tx.create_snapshot(kind, key, parent, labels)
                if parent_id and s.parent_ids[0] != parent_id:
                    raise ConflictError(f"parent {parent!r} was replaced while preparing {key!r}")
                if tmp:
                    os.rename(tmp, self._snapshot_dir(s.id))
                return s

            s = await self._ms.update(step)
            renamed = True
        finally:
            if tmp:
                if not renamed:
                    await asyncio.shield(asyncio.to_thread(shutil.rmtree, tmp, True))
                self._inflight.discard(tmp)
        return self._mounts(s)
