"""Leases in the metadata database, and the helpers other stores use to attach
what they create to the current lease (``arun.leasectx``)."""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence

from arun import labels, leasectx, namespaces
from arun.core.content import validate_digest
from arun.core.leases import Lease, Resource
from arun.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError, UnimplementedError
from arun.metadata.common import (
    Adaptor,
    Hooks,
    check_map,
    compile_filters,
    dump_map,
    duplicate_key,
    load_map,
    nonempty,
    to_datetime,
)
from arun.metadata.db import Database, Tx
from arun.metadata.namespaces import ensure

CONTENT = "content"
INGESTS = "ingests"
IMAGES = "images"
SNAPSHOTS = "snapshots"


def snapshot_type(snapshotter: str) -> str:
    return f"{SNAPSHOTS}/{snapshotter}"


def adapt(lease: Lease) -> Adaptor:
    def field(path: Sequence[str]) -> str | None:
        if not path:
            return None
        if path[0] == "id":
            return nonempty(lease.id)
        if path[0] == "labels":
            return check_map(path[1:], lease.labels)
        return None

    return field


def parse_resource(r: Resource) -> tuple[str, str]:
    """Validate a resource; returns (type, id) as stored."""
    parts = r.type.split("/")
    kind = parts[0]
    if kind in (CONTENT, INGESTS, IMAGES):
        if len(parts) != 1:
            raise InvalidArgumentError(f"invalid resource type {r.type}")
        if kind == CONTENT:
            try:
                validate_digest(r.id)
            except InvalidArgumentError as e:
                raise InvalidArgumentError(f"invalid content resource id {r.id}: {e}") from e
    elif kind == SNAPSHOTS:
        if len(parts) != 2 or not parts[1]:
            raise InvalidArgumentError(f"invalid snapshot resource type {r.type}")
    else:
        raise UnimplementedError(f"resource type {r.type} not supported yet")
    if not r.id:
        raise InvalidArgumentError("resource id must not be empty")
    return r.type, r.id


async def attach(tx: Tx, namespace: str, type_: str, id_: str, *, lease_exists: bool | None = None) -> bool:
    """Attach a resource to the lease of this context, if there is one.

    Returns whether it was leased; NotFound if the lease does not exist. ``lease_exists``:
    what the caller already read about that lease inside ``tx`` (None: look it up here).
    """
    lease = leasectx.current()
    if lease is None:
        return False
    if lease_exists is None:
        lease_exists = bool(
            await tx.fetchone("SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (namespace, lease))
        )
    if not lease_exists:
        raise NotFoundError(f"lease {lease!r} does not exist")
    tx.execute_later(
        "INSERT OR IGNORE INTO lease_resources (namespace, lease, type, id) VALUES (?, ?, ?, ?)",
        (namespace, lease, type_, id_),
    )
    return True


async def detach(tx: Tx, namespace: str, type_: str, id_: str) -> None:
    """Remove a resource from the lease of this context, if there is one."""
    lease = leasectx.current()
    if lease is None:
        return
    tx.execute_later(
        "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?",
        (namespace, lease, type_, id_),
    )


# Called with no arguments to run a garbage collection and wait for it (set by the GC plugin).
SyncCollect = Callable[[], Awaitable[object]]


class SqlLeaseManager:
    def __init__(self, db: Database, hooks: Hooks | None = None) -> None:
        self.db = db
        self.hooks = hooks or Hooks()
        self.collect: SyncCollect | None = None

    async def create(self, id: str, labels_: dict[str, str] | None = None) -> Lease:
        ns = namespaces.required()
        if not id:
            raise InvalidArgumentError("lease id must be provided")
        labels.validate_all(labels_ or {})
        now = time.time_ns()
        try:
            async with self.db.update() as tx:
                await ensure(tx, ns)
                # No look first: the primary key refuses an existing id (below); the insert runs
                # with the COMMIT, in one call into the database's worker.
                tx.execute_later(
                    "INSERT INTO leases (namespace, id, labels, created_at) VALUES (?, ?, ?, ?)",
                    (ns, id, dump_map(labels_), now),
                )
                self.hooks.mutated(tx)
        except sqlite3.IntegrityError as e:
            if not duplicate_key(e):
                raise
            raise AlreadyExistsError(f"lease {id!r}: already exists") from None
        return Lease(id=id, labels=load_map(dump_map(labels_)), created_at=to_datetime(now))

    async def delete(self, id: str, *, sync: bool = False) -> None:
        ns = namespaces.required()
        deleted = False

        def count(rows: int) -> None:
            nonlocal deleted
            deleted = rows > 0
            if deleted:
                self.hooks.mutated(tx, dirty=True)

        async with self.db.update() as tx:
            # lease_resources go with it (ON DELETE CASCADE). Run with the COMMIT (one call into
            # the database's worker); a lease that was not there leaves an empty commit behind.
            tx.execute_later("DELETE FROM leases WHERE namespace = ? AND id = ?", (ns, id), count)
        if not deleted:
            raise NotFoundError(f"lease {id!r}: not found")
        if sync and self.collect is not None:
            await asyncio.shield(self.collect())

    async def list(self, *filters: str) -> list[Lease]:
        ns = namespaces.required()
        match = compile_filters(filters)
        async with self.db.view() as tx:
            rows = await tx.fetchall(
                "SELECT id, labels, created_at FROM leases WHERE namespace = ? ORDER BY id", (ns,)
            )
        out = []
        for r in rows:
            lease = Lease(id=r["id"], labels=load_map(r["labels"]), created_at=to_datetime(r["created_at"]))
            if match(adapt(lease)):
                out.append(lease)
        return out

    async def _require(self, tx: Tx, ns: str, lease: str) -> None:
        if not await tx.fetchone("SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (ns, lease)):
            raise NotFoundError(f"lease {lease!r}: not found")

    async def add_resource(self, lease: str, resource: Resource) -> None:
        ns = namespaces.required()
        async with self.db.update() as tx:
            await self._require(tx, ns, lease)
            type_, id_ = parse_resource(resource)
            await tx.execute(
                "INSERT OR IGNORE INTO lease_resources (namespace, lease, type, id) VALUES (?, ?, ?, ?)",
                (ns, lease, type_, id_),
            )
            self.hooks.mutated(tx)

    async def delete_resource(self, lease: str, resource: Resource) -> None:
        ns = namespaces.required()
        async with self.db.update() as tx:
            await self._require(tx, ns, lease)
            type_, id_ = parse_resource(resource)
            await tx.execute(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?",
                (ns, lease, type_, id_),
            )
            self.hooks.mutated(tx, dirty=True)

    async def list_resources(self, lease: str) -> builtins.list[Resource]:
        ns = namespaces.required()
        async with self.db.view() as tx:
            await self._require(tx, ns, lease)
            rows = await tx.fetchall(
                "SELECT type, id FROM lease_resources WHERE namespace = ? AND lease = ? ORDER BY type, id",
                (ns, lease),
            )
        order = {CONTENT: 0, IMAGES: 1, INGESTS: 2}
        resources = [Resource(id=r["id"], type=r["type"]) for r in rows]
        resources.sort(key=lambda r: (order.get(r.type, 3), r.type, r.id))
        return resources
