"""The metadata layer as one object: every namespaced store over one database,
the backends they wrap, and the garbage collector that ties them together
(containerd's ``metadata.DB``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from arun.core.content import ContentStore
from arun.core.events import Publisher
from arun.core.snapshots import Snapshotter
from arun.errdefs import NotFoundError
from arun.metadata import content as content_mod
from arun.metadata.common import Hooks
from arun.metadata.containers import SqlContainerStore
from arun.metadata.content import SqlContentStore
from arun.metadata.db import Database
from arun.metadata.gc import Collector, Stats
from arun.metadata.images import SqlImageStore
from arun.metadata.leases import SqlLeaseManager
from arun.metadata.namespaces import SqlNamespaceStore
from arun.metadata.sandboxes import SqlSandboxStore
from arun.metadata.snapshots import NamespacedSnapshotter

log = logging.getLogger(__name__)


class Metadata:
    def __init__(
        self,
        db: Database,
        *,
        content: ContentStore | None = None,
        snapshotters: Mapping[str, Snapshotter] | None = None,
        publisher: Publisher | None = None,
        shared_content: bool = True,
    ) -> None:
        self.db = db
        self.hooks = Hooks(publisher)
        self.namespaces = SqlNamespaceStore(db, self.hooks)
        self.containers = SqlContainerStore(db, self.hooks)
        self.images = SqlImageStore(db, self.hooks)
        self.leases = SqlLeaseManager(db, self.hooks)
        self.sandboxes = SqlSandboxStore(db, self.hooks)
        self.content = SqlContentStore(db, content, self.hooks, shared=shared_content) if content else None
        self.snapshotters = {
            name: NamespacedSnapshotter(db, name, sn, self.hooks) for name, sn in (snapshotters or {}).items()
        }
        self.collector = Collector(db, self.hooks, self._sweep_backends)

    @property
    def publisher(self) -> Publisher | None:
        return self.hooks.publisher

    @publisher.setter
    def publisher(self, p: Publisher | None) -> None:
        self.hooks.publisher = p

    def snapshotter(self, name: str) -> NamespacedSnapshotter:
        sn = self.snapshotters.get(name)
        if sn is None:
            raise NotFoundError(f"snapshotter not loaded: {name}")
        return sn

    def content_store(self) -> SqlContentStore:
        if self.content is None:
            raise NotFoundError("no content store loaded")
        return self.content

    async def garbage_collect(self) -> Stats:
        """One full collection now (without the scheduler's pacing)."""
        return await self.collector.collect()

    async def _sweep_backends(self, stats: Stats) -> None:
        # Only the backends that lost a record (or may hold a leftover) since their last
        # sweep; one whose sweep fails or is cancelled stays dirty for the next collection.
        content, dirty = self.hooks.take_dirty()
        pending = set(dirty) & set(self.snapshotters)
        try:
            if content and self.content is not None:
                try:
                    blobs, ingests = await content_mod.garbage_collect(self.content)
                    stats.blobs_removed, stats.ingests_aborted = blobs, ingests
                    content = False
                except Exception as e:
                    log.warning("content garbage collection failed: %s", e, exc_info=True)
            for name, sn in self.snapshotters.items():
                if name not in pending:
                    continue
                try:
                    stats.snapshots_removed[name] = await sn.garbage_collect()
                    pending.discard(name)
                except Exception as e:
                    log.warning("snapshot garbage collection of %s failed: %s", name, e, exc_info=True)
        finally:
            self.hooks.backend_dirty(content=content and self.content is not None)
            for name in pending:
                self.hooks.backend_dirty(snapshotter=name)

    async def close(self) -> None:
        await self.db.close()
