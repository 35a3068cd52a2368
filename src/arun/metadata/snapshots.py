"""Namespaced snapshots: a wrapper over one backend snapshotter (containerd
``metadata/snapshot.go`` semantics).

A namespace's key ``k`` maps to the backend key ``<ns>/<n>/k``; parents are
resolved within the namespace; labels live here (only the inheritable ones,
``containerd.io/snapshot.ref`` and ``containerd.io/snapshot/*``, are passed to
the backend). Remove only forgets the key: the backend snapshot is removed by
garbage collection once no namespace refers to it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from arun import leasectx, namespaces
from arun.api.containerd.events import snapshot_pb2
from arun.core.mount import Mount
from arun.core.snapshots import Cleaner, Info, Kind, Snapshotter, Usage
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from arun.labels import validate_all as validate_labels
from arun.metadata import leases
from arun.metadata.common import (
    Adaptor,
    Hooks,
    backend_key,
    check_map,
    clean_map,
    compile_filters,
    dump_map,
    load_map,
    next_sequence,
    to_datetime,
)
from arun.metadata.db import Database, Tx
from arun.metadata.namespaces import ensure
from arun.metadata.rwlock import RWLock

log = logging.getLogger(__name__)

LABEL_SNAPSHOT_REF = "containerd.io/snapshot.ref"
INHERITED_PREFIX = "containerd.io/snapshot/"


def inherited(m: Mapping[str, str] | None) -> dict[str, str]:
    """The labels a backend snapshotter gets to see."""
    return {k: v for k, v in (m or {}).items() if k == LABEL_SNAPSHOT_REF or k.startswith(INHERITED_PREFIX)}


def adapt(info: Info) -> Adaptor:
    def field(path: Sequence[str]) -> str | None:
        if not path:
            return None
        match path[0]:
            case "kind":
                return {Kind.ACTIVE: "active", Kind.VIEW: "view", Kind.COMMITTED: "committed"}.get(info.kind)
            case "name":
                return info.name
            case "parent":
                return info.parent
            case "labels":
                return check_map(path[1:], info.labels)
        return None

    return field


def _overlay(binfo: Info, row: sqlite3.Row) -> Info:
    """The backend's info seen through this namespace: its name, parent, times and labels."""
    merged = dict(binfo.labels)
    merged.update(load_map(row["labels"]))
    return Info(
        name=row["key"],
        kind=binfo.kind,
        parent=row["parent"],
        labels=merged,
        created=to_datetime(row["created_at"]),
        updated=to_datetime(row["updated_at"]),
    )


_SELECT = "SELECT key, backend_key, parent, labels, created_at, updated_at FROM snapshots"
_INSERT = (
    "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent, labels, created_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass
class _Node:
    info: Info | None = None
    remove: bool = False
    children: list[_Node] = field(default_factory=list)


class NamespacedSnapshotter:
    """``core.snapshots.Snapshotter`` for the current namespace over the backend ``name``."""

    def __init__(self, db: Database, name: str, backend: Snapshotter, hooks: Hooks | None = None) -> None:
        self.db = db
        self.name = name
        self.backend = backend
        self.hooks = hooks or Hooks()
        self.lock = RWLock()
        # Swept at the first collection: a crash may have left backend snapshots behind.
        self.hooks.backend_dirty(snapshotter=name)
        self._type = leases.snapshot_type(name)
        self._mounts: dict[tuple[str, str], tuple[Mount, ...]] = {}
        self._mounts_gen = 0
        self.hooks.on_snapshot_removed(self._forget_mounts)

    @contextlib.asynccontextmanager
    async def _dirty_on_failure(self) -> AsyncIterator[None]:
        """Mark this backend dirty if the block fails: a backend change may have happened
        (or the commit may have landed) without the record that refers to it."""
        try:
            yield
        except BaseException:
            self.hooks.backend_dirty(snapshotter=self.name)
            raise

    async def _row(self, tx: Tx, ns: str, key: str) -> sqlite3.Row | None:
        return await tx.fetchone(
            f"{_SELECT} WHERE namespace = ? AND snapshotter = ? AND key = ?", (ns, self.name, key)
        )

    async def _lookup(self, ns: str, key: str) -> sqlite3.Row | None:
        return await self.db.lookup(
            f"{_SELECT} WHERE namespace = ? AND snapshotter = ? AND key = ?", (ns, self.name, key)
        )

    async def _resolve(self, key: str) -> str:
        ns = namespaces.required()
        row = await self._lookup(ns, key)
        if row is None:
            raise NotFoundError(f"snapshot {key} does not exist")
        return str(row["backend_key"])

    async def stat(self, key: str) -> Info:
        ns = namespaces.required()
        row = await self._lookup(ns, key)
        if row is None:
            raise NotFoundError(f"snapshot {key} does not exist")
        return _overlay(await self.backend.stat(row["backend_key"]), row)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        ns = namespaces.required()
        if not info.name:
            raise InvalidArgumentError("snapshot name is required for update")
        async with self.lock.shared(), self.db.update() as tx:
            row = await self._row(tx, ns, info.name)
            if row is None:
                raise NotFoundError(f"snapshot {info.name} does not exist")
            local = load_map(row["labels"])
            if fieldpaths:
                for path in fieldpaths:
                    if path.startswith("labels."):
                        key = path.removeprefix("labels.")
                        local[key] = info.labels.get(key, "")
                    elif path == "labels":
                        local = dict(info.labels)
                    else:
                        raise InvalidArgumentError(f"cannot update {path!r} field on snapshot {info.name!r}")
            else:
                local = dict(info.labels)
            local = clean_map(local)
            validate_labels(local)
            now = time.time_ns()
            await tx.execute(
                "UPDATE snapshots SET labels = ?, updated_at = ? "
                "WHERE namespace = ? AND snapshotter = ? AND key = ?",
                (dump_map(local), now, ns, self.name, info.name),
            )
            binfo = await self.backend.update(
                Info(name=row["backend_key"], kind=Kind.UNKNOWN, labels=inherited(local)), ["labels"]
            )
            self.hooks.mutated(tx)
            row = await self._row(tx, ns, info.name)
            assert row is not None
        return _overlay(binfo, row)

    async def usage(self, key: str) -> Usage:
        return await self.backend.usage(await self._resolve(key))

    async def mounts(self, key: str) -> list[Mount]:
        ns = namespaces.required()
        cached = self._mounts.get((ns, key))
        if cached is not None:
            return list(cached)
        gen = self._mounts_gen
        mounts = await self.backend.mounts(await self._resolve(key))
        self._remember_mounts(ns, key, mounts, gen)
        return mounts

    # A snapshot's mounts follow from its backend snapshot's id, kind and parents, none of
    # which change while its record lives (a commit replaces the record; backend keys are
    # never reused): they are kept per namespace and key, filled by Prepare/View and Mounts,
    # and dropped whenever a record of this snapshotter is removed (Remove, Commit, garbage
    # collection: ``Hooks.snapshot_removed``, before and right after the removal commits). A
    # read that raced a drop is not kept.
    MOUNTS_CACHE_SIZE = 256

    def _remember_mounts(self, ns: str, key: str, mounts: list[Mount], gen: int) -> None:
        if gen != self._mounts_gen:
            return
        cache = self._mounts
        if len(cache) >= self.MOUNTS_CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[(ns, key)] = tuple(mounts)

    def _forget_mounts(self, ns: str, snapshotter: str, key: str) -> None:
        if snapshotter == self.name:
            self._mounts.pop((ns, key), None)
            self._mounts_gen += 1

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        mounts = await self._create(key, parent, labels, readonly=False)
        return mounts

    async def view(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(key, parent, labels, readonly=True)

    async def _create(
        self, key: str, parent: str, labels_: Mapping[str, str] | None, *, readonly: bool
    ) -> list[Mount]:
        ns = namespaces.required()
        if not key:
            raise InvalidArgumentError("snapshot key must not be empty")
        base = clean_map(labels_)
        validate_labels(base)
        target = base.get(LABEL_SNAPSHOT_REF, "")
        create = self.backend.view if readonly else self.backend.prepare
        # One write transaction around the backend's work, as containerd's bolt transaction:
        # the checks, the key's sequence number, the backend snapshot and then its record. A
        # backend snapshot whose record did not commit is removed here, or (if that fails too)
        # left to garbage collection; its backend key is never reused either way, since the
        # sequence only moves on with a record that refers to it.
        conflict: str | None = None
        created: str | None = None
        committed = False

        def done() -> None:
            nonlocal committed
            committed = True

        async with self.lock.shared():
            try:
                async with self.db.update() as tx:
                    await ensure(tx, ns)
                    # The target, key and parent rows and whether this context's lease exists,
                    # in one statement (the lease's row has a NULL key; lease ids are never empty).
                    lease = leasectx.current() or ""
                    rows = {
                        r["key"]: r["backend_key"]
                        for r in await tx.fetchall(
                            "SELECT key, backend_key FROM snapshots "
                            "WHERE namespace = ? AND snapshotter = ? AND key IN (?, ?, ?) "
                            "UNION ALL SELECT NULL, id FROM leases WHERE namespace = ? AND id = ?",
                            (ns, self.name, target, key, parent, ns, lease),
                        )
                    }
                    leased = None in rows
                    if target and target in rows:
                        await leases.attach(tx, ns, self._type, target, lease_exists=leased)
                        conflict = f"target snapshot {target!r}: already exists"
                    elif key in rows:
                        await leases.attach(tx, ns, self._type, key, lease_exists=leased)
                        conflict = f"snapshot {key!r}: already exists"
                    else:
                        bparent = ""
                        if parent:
                            if parent not in rows:
                                raise NotFoundError(f"parent snapshot {parent} does not exist")
                            bparent = rows[parent]
                        # Before the backend's work: a missing lease fails with nothing created.
                        await leases.attach(tx, ns, self._type, key, lease_exists=leased)
                        bkey = backend_key(ns, await next_sequence(tx, f"snapshots/{self.name}"), key)
                        try:
                            mounts = await create(bkey, bparent, labels=inherited(base))
                        except BaseException:
                            # A backend that failed (or was cancelled) half-way may have left something.
                            self.hooks.backend_dirty(snapshotter=self.name)
                            raise
                        created = bkey
                        gen = self._mounts_gen
                        now = time.time_ns()
                        # Runs with the COMMIT; the key was checked under this write transaction.
                        tx.execute_later(
                            _INSERT,
                            (ns, self.name, key, bkey, parent, dump_map(base), now, now),
                        )
                        if not readonly:
                            self.hooks.publish(
                                tx,
                                ns,
                                "/snapshot/prepare",
                                snapshot_pb2.SnapshotPrepare(key=key, parent=parent, snapshotter=self.name),
                            )
                        self.hooks.mutated(tx)
                        tx.on_commit(done)
            except BaseException:
                if created is not None and not committed:
                    await self._remove_unreferenced(created)
                raise
        if conflict is not None:
            raise AlreadyExistsError(conflict)
        self._remember_mounts(ns, key, mounts, gen)
        return mounts

    async def _remove_unreferenced(self, bkey: str) -> None:
        """Remove a backend snapshot whose record never committed (or leave it to GC)."""
        try:
            await self.backend.remove(bkey)
        except BaseException as e:
            self.hooks.backend_dirty(snapshotter=self.name)
            if not isinstance(e, Exception):
                raise
            log.error("failed to clean up unreferenced snapshot %r of %s: %s", bkey, self.name, e)

    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        ns = namespaces.required()
        if not name:
            raise InvalidArgumentError("snapshot name must not be empty")
        base = clean_map(labels)
        validate_labels(base)
        conflict = False
        async with self.lock.shared(), self._dirty_on_failure(), self.db.update() as tx:
            await leases.attach(tx, ns, leases.snapshot_type(self.name), name)
            if await self._row(tx, ns, name) is not None:
                conflict = True
            else:
                row = await self._row(tx, ns, key)
                if row is None:
                    raise NotFoundError(f"snapshot {key} does not exist")
                parent = row["parent"]
                if parent and await self._row(tx, ns, parent) is None:
                    raise NotFoundError(f"parent snapshot {parent} does not exist")
                name_key = backend_key(ns, await next_sequence(tx, f"snapshots/{self.name}"), name)
                now = time.time_ns()
                await tx.execute(
                    "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
                    (ns, self.name, key),
                )
                await tx.execute(
                    _INSERT,
                    (ns, self.name, name, name_key, parent, dump_map(base), now, now),
                )
                await leases.detach(tx, ns, leases.snapshot_type(self.name), key)
                # The backend commit is the last step: if it fails the transaction rolls back.
                self.hooks.snapshot_removed(tx, ns, self.name, key)
                await self.backend.commit(name_key, row["backend_key"], labels=inherited(base))
                self.hooks.publish(
                    tx,
                    ns,
                    "/snapshot/commit",
                    snapshot_pb2.SnapshotCommit(key=key, name=name, snapshotter=self.name),
                )
                self.hooks.mutated(tx)
        if conflict:
            raise AlreadyExistsError(f"snapshot {name!r}: already exists")

    async def remove(self, key: str) -> None:
        ns = namespaces.required()
        async with self.lock.shared(), self.db.update() as tx:
            row = await self._row(tx, ns, key)
            if row is None:
                raise NotFoundError(f"snapshot {key} does not exist")
            if await tx.fetchone(
                "SELECT 1 FROM snapshots WHERE namespace = ? AND snapshotter = ? AND parent = ? LIMIT 1",
                (ns, self.name, key),
            ):
                raise FailedPreconditionError("cannot remove snapshot with child")
            self.hooks.snapshot_removed(tx, ns, self.name, key)
            await tx.execute(
                "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
                (ns, self.name, key),
            )
            await leases.detach(tx, ns, leases.snapshot_type(self.name), key)
            self.hooks.publish(
                tx, ns, "/snapshot/remove", snapshot_pb2.SnapshotRemove(key=key, snapshotter=self.name)
            )
            # The backend snapshot is garbage collection's to remove.
            self.hooks.backend_dirty_on_commit(tx, snapshotter=self.name)
            self.hooks.mutated(tx, dirty=True)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Snapshots of this namespace matching any of ``filters``."""
        ns = namespaces.required()
        match = compile_filters(filters)
        async with self.db.view() as tx:
            rows = await tx.fetchall(
                f"{_SELECT} WHERE namespace = ? AND snapshotter = ? ORDER BY key", (ns, self.name)
            )
        for row in rows:
            try:
                binfo = await self.backend.stat(row["backend_key"])
            except NotFoundError:
                continue
            info = _overlay(binfo, row)
            if match(adapt(info)):
                yield info

    async def cleanup(self) -> None:
        """Remove backend snapshots no namespace refers to, then the backend's own leftovers."""
        await self.garbage_collect()

    async def close(self) -> None:
        await self.backend.close()

    # ------------------------------------------------------------------ garbage collection

    async def garbage_collect(self) -> int:
        """Remove backend snapshots that no namespace refers to; returns how many."""
        removed = 0
        async with self.lock.exclusive():
            async with self.db.view() as tx:
                rows = await tx.fetchall(
                    "SELECT backend_key FROM snapshots WHERE snapshotter = ?", (self.name,)
                )
            seen = {r["backend_key"] for r in rows}
            nodes: dict[str, _Node] = {}
            roots: list[_Node] = []
            async for info in self.backend.walk():
                node = nodes.setdefault(info.name, _Node())
                node.info = info
                node.remove = info.name not in seen
                if info.parent:
                    nodes.setdefault(info.parent, _Node()).children.append(node)
                else:
                    roots.append(node)
            for node in roots:
                removed += await self._prune(node)
            if isinstance(self.backend, Cleaner):
                await self.backend.cleanup()
        return removed

    async def _prune(self, node: _Node) -> int:
        # Children first, so a parent is free of them when its turn comes.
        removed = 0
        stack: list[tuple[_Node, bool]] = [(node, False)]
        while stack:
            n, expanded = stack.pop()
            if not expanded:
                stack.append((n, True))
                stack.extend((c, False) for c in n.children)
                continue
            if n.remove and n.info is not None:
                try:
                    await self.backend.remove(n.info.name)
                    removed += 1
                    log.debug("removed snapshot %r of %s", n.info.name, self.name)
                except FailedPreconditionError as e:
                    log.warning("failed to remove snapshot %r of %s: %s", n.info.name, self.name, e)
        return removed
