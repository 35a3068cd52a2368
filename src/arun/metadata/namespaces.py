"""Namespaces in the metadata database.

A namespace is created explicitly (Create) or implicitly by the first
write of any store into it (``ensure``), as containerd's buckets are.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from arun import identifiers, labels
from arun.errdefs import AlreadyExistsError, FailedPreconditionError, NotFoundError
from arun.metadata.db import Database, Tx

if TYPE_CHECKING:
    from arun.metadata.common import Hooks


async def ensure(tx: Tx, namespace: str) -> None:
    """Create ``namespace`` if it does not exist yet (inside ``tx``; it runs with the
    transaction's next statement)."""
    tx.execute_later(
        "INSERT OR IGNORE INTO namespaces (name, created_at) VALUES (?, ?)", (namespace, time.time_ns())
    )


# Tables whose rows keep a namespace from being deleted, with containerd's wording.
_HOLDERS = (
    ("images", "images"),
    ("content", "blobs"),
    ("containers", "containers"),
)


class SqlNamespaceStore:
    def __init__(self, db: Database, hooks: Hooks | None = None) -> None:
        self.db = db
        self.hooks = hooks

    async def create(self, name: str, labels_: dict[str, str] | None = None) -> None:
        identifiers.validate(name)
        labels.validate_all(labels_ or {})
        async with self.db.update() as tx:
            if await tx.fetchone("SELECT 1 FROM namespaces WHERE name = ?", (name,)):
                raise AlreadyExistsError(f"namespace {name!r}: already exists")
            await tx.execute(
                "INSERT INTO namespaces (name, labels, created_at) VALUES (?, ?, ?)",
                (name, json.dumps(labels_ or {}, sort_keys=True), time.time_ns()),
            )

    async def labels(self, name: str) -> dict[str, str]:
        identifiers.validate(name)
        row = await self.db.lookup("SELECT labels FROM namespaces WHERE name = ?", (name,))
        if row is None:
            raise NotFoundError(f"namespace {name!r}: not found")
        result: dict[str, str] = json.loads(row["labels"])
        return result

    async def set_label(self, name: str, key: str, value: str) -> None:
        """Set a label; an empty value removes it."""
        identifiers.validate(name)
        labels.validate(key, value)
        async with self.db.update() as tx:
            row = await tx.fetchone("SELECT labels FROM namespaces WHERE name = ?", (name,))
            if row is None:
                raise NotFoundError(f"namespace {name!r}: not found")
            current = json.loads(row["labels"])
            if value:
                current[key] = value
            else:
                current.pop(key, None)
            await tx.execute(
                "UPDATE namespaces SET labels = ? WHERE name = ?", (json.dumps(current, sort_keys=True), name)
            )

    async def replace_labels(self, name: str, labels_: dict[str, str]) -> None:
        """Set the labels of ``name`` to exactly ``labels_``."""
        identifiers.validate(name)
        labels.validate_all(labels_)
        async with self.db.update() as tx:
            changed = await tx.execute(
                "UPDATE namespaces SET labels = ? WHERE name = ?", (json.dumps(labels_, sort_keys=True), name)
            )
            if not changed:
                raise NotFoundError(f"namespace {name!r}: not found")

    async def list_with_labels(self) -> dict[str, dict[str, str]]:
        """Every namespace with its labels, by name, in name order."""
        async with self.db.view() as tx:
            rows = await tx.fetchall("SELECT name, labels FROM namespaces ORDER BY name")
        return {r["name"]: json.loads(r["labels"]) for r in rows}

    async def list(self) -> list[str]:
        async with self.db.view() as tx:
            rows = await tx.fetchall("SELECT name FROM namespaces ORDER BY name")
        return [r["name"] for r in rows]

    async def delete(self, name: str) -> None:
        identifiers.validate(name)
        async with self.db.update() as tx:
            if not await tx.fetchone("SELECT 1 FROM namespaces WHERE name = ?", (name,)):
                raise NotFoundError(f"namespace {name!r}: not found")
            held = []
            for table, what in _HOLDERS:
                if await tx.fetchone(f"SELECT 1 FROM {table} WHERE namespace = ? LIMIT 1", (name,)):
                    held.append(what)
            rows = await tx.fetchall(
                "SELECT DISTINCT snapshotter FROM snapshots WHERE namespace = ? ORDER BY snapshotter", (name,)
            )
            held.extend(f"snapshots on {r['snapshotter']!r} snapshotter" for r in rows)
            if await tx.fetchone("SELECT 1 FROM sandboxes WHERE namespace = ? LIMIT 1", (name,)):
                held.append("sandboxes")
            if held:
                raise FailedPreconditionError(
                    f"namespace {name!r} must be empty, but it still has {', '.join(held)}"
                )
            # Leases and ingests hold nothing by themselves once the namespace is empty.
            await tx.execute("DELETE FROM lease_resources WHERE namespace = ?", (name,))
            await tx.execute("DELETE FROM leases WHERE namespace = ?", (name,))
            dropped = await tx.execute("DELETE FROM ingests WHERE namespace = ?", (name,))
            if dropped and self.hooks is not None:
                # Their backend ingests are garbage collection's to abort.
                self.hooks.backend_dirty_on_commit(tx, content=True)
            await tx.execute("DELETE FROM namespaces WHERE name = ?", (name,))
