"""What the overlay and native snapshotters share: metastore plumbing, commit, remove, cleanup.

Directory life cycle (both snapshotters): a new snapshot's directory is built
under ``snapshots/new-*`` and renamed to ``snapshots/<id>`` in the same
metastore step that inserts its row; a removed snapshot's row is deleted
first and its directory renamed to ``snapshots/rm-<id>`` and deleted after
the commit. A crash at any point leaves at worst a directory no row refers
to, which ``cleanup()`` removes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence

from arun.core.mount import Mount
from arun.core.snapshots import Info, Kind, Usage
from arun.errdefs import FailedPreconditionError
from arun.fsutil import disk_usage
from arun.snapshots.storage import MetaStore, Snapshot, Transaction

log = logging.getLogger(__name__)

__all__ = ["LocalSnapshotter"]


class LocalSnapshotter:
    """Base of the snapshotters that keep trees in ``<root>/snapshots/<id>`` with a ``metadata.db``."""

    def __init__(self, root: str | os.PathLike[str], *, async_remove: bool = False) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.snapshots_dir = os.path.join(self.root, "snapshots")
        self.async_remove = async_remove
        self._ms = MetaStore(os.path.join(self.root, "metadata.db"))
        # Temporary directories being filled outside a metastore step; cleanup() leaves them alone.
        self._inflight: set[str] = set()

    async def _init(self) -> None:
        def mk() -> None:
            os.makedirs(self.root, 0o700, exist_ok=True)
            os.makedirs(self.snapshots_dir, 0o700, exist_ok=True)

        await asyncio.to_thread(mk)
        await self._ms.open()

    # -------------------------------------------------------- per implementation

    def _snapshot_dir(self, sid: str) -> str:
        return os.path.join(self.snapshots_dir, sid)

    def _usage_dir(self, sid: str) -> str:
        """The directory whose size is the snapshot's own usage."""
        raise NotImplementedError

    def _mounts(self, s: Snapshot) -> list[Mount]:
        raise NotImplementedError

    # -------------------------------------------------------- Snapshotter

    async def stat(self, key: str) -> Info:
        _, info, _ = await self._ms.view(lambda tx: tx.get_info(key))
        return info

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        return await self._ms.update(lambda tx: tx.update_info(info, fieldpaths))

    async def usage(self, key: str) -> Usage:
        sid, info, usage = await self._ms.view(lambda tx: tx.get_info(key))
        if info.kind == Kind.ACTIVE:
            inodes, size = await asyncio.to_thread(disk_usage, self._usage_dir(sid))
            return Usage(inodes, size)
        return usage

    async def mounts(self, key: str) -> list[Mount]:
        s = await self._ms.view(lambda tx: tx.get_snapshot(key))
        return self._mounts(s)

    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        sid, info, _ = await self._ms.view(lambda tx: tx.get_info(key))
        if info.kind != Kind.ACTIVE:
            raise FailedPreconditionError(f"snapshot {key!r} is not active")
        inodes, size = await asyncio.to_thread(disk_usage, self._usage_dir(sid))

        def step(tx: Transaction) -> None:
            # Re-checked inside the write step: the key may have changed meanwhile.
            if tx.get_info(key)[0] != sid:
                raise FailedPreconditionError(f"snapshot {key!r} changed while committing")
            tx.commit_active(key, name, Usage(inodes, size), labels)

        await self._ms.update(step)

    async def remove(self, key: str) -> None:
        sid, _ = await self._ms.update(lambda tx: tx.remove(key))
        if self.async_remove:
            return
        await asyncio.to_thread(self._remove_dir, sid)

    def _remove_dir(self, sid: str) -> None:
        path = self._snapshot_dir(sid)
        doomed = os.path.join(self.snapshots_dir, f"rm-{sid}")
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return  # a view without a directory, or already gone
        shutil.rmtree(doomed, ignore_errors=True)
        if os.path.lexists(doomed):
            log.warning("failed to remove snapshot directory %s; cleanup will retry", doomed)

    async def walk(self) -> AsyncIterator[Info]:
        for info in await self._ms.view(lambda tx: tx.walk_info()):
            yield info

    async def cleanup(self) -> None:
        """Remove every directory under ``snapshots/`` that no snapshot refers to."""

        def find(tx: Transaction) -> list[str]:
            ids = tx.id_map()
            return [
                os.path.join(self.snapshots_dir, name)
                for name in os.listdir(self.snapshots_dir)
                if name not in ids and os.path.join(self.snapshots_dir, name) not in self._inflight
            ]

        for path in await self._ms.update(find):
            await asyncio.to_thread(shutil.rmtree, path, True)

    async def close(self) -> None:
        await self._ms.close()

    # -------------------------------------------------------- helpers

    def _new_dir(self) -> str:
        """A fresh ``snapshots/new-*`` directory (0755)."""
        td = tempfile.mkdtemp(prefix="new-", dir=self.snapshots_dir)
        os.chmod(td, 0o755)
        return td
