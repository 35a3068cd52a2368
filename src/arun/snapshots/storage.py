"""The snapshotter metastore: snapshots by key in a small SQLite database.

Every snapshotter root has its own ``metadata.db`` (containerd keeps a bolt
file at the same place). A row holds the snapshot's key, its numeric id
(never reused, it names the directory on disk), kind, parent, labels,
timestamps and the usage recorded at commit.

The database is used through one dedicated thread: ``view(fn)`` and
``update(fn)`` run ``fn(tx)`` there inside a read or write transaction, so a
whole step — check, insert, small filesystem work such as a rename — is one
unit that commits or rolls back together, and one thread hop for the loop.
A cancelled caller does not interrupt a step that already started.
Keep big filesystem work (copying or deleting trees) out of ``fn``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from arun.core.snapshots import Info, Kind, Usage
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)

__all__ = ["MetaStore", "Snapshot", "Transaction"]

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    key       TEXT NOT NULL UNIQUE,
    kind      INTEGER NOT NULL,
    parent_id INTEGER REFERENCES snapshots(id),
    labels    TEXT NOT NULL DEFAULT '{}',
    created   INTEGER NOT NULL,
    updated   INTEGER NOT NULL,
    inodes    INTEGER NOT NULL DEFAULT 0,
    size      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
"""


@dataclass(frozen=True)
class Snapshot:
    """An active or view snapshot as the snapshotter needs it: its id and its parents' ids, nearest first."""

    id: str
    kind: Kind
    parent_ids: tuple[str, ...] = ()


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _require_key(key: str, what: str = "key") -> None:
    if not key:
        raise InvalidArgumentError(f"snapshot {what} must not be empty")


class Transaction:
    """Metastore operations; valid only inside the ``fn`` given to ``view``/``update``."""

    def __init__(self, conn: sqlite3.Connection, writable: bool) -> None:
        self._c = conn
        self.writable = writable

    def _row(self, key: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._c.execute(
            "SELECT s.*, p.key AS parent_key FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id"
            " WHERE s.key = ?",
            (key,),
        ).fetchone()
        return row

    def _must(self, key: str) -> sqlite3.Row:
        row = self._row(key)
        if row is None:
            raise NotFoundError(f"snapshot {key!r} does not exist")
        return row

    @staticmethod
    def _info(row: sqlite3.Row) -> Info:
        return Info(
            name=row["key"],
            kind=Kind(row["kind"]),
            parent=row["parent_key"] or "",
            labels=json.loads(row["labels"]),
            created=_dt(row["created"]),
            updated=_dt(row["updated"]),
        )

    def _parents(self, parent_id: int | None) -> tuple[str, ...]:
        if parent_id is None:
            return ()
        rows = self._c.execute(
            "WITH RECURSIVE chain(id, parent_id, depth) AS ("
            " SELECT id, parent_id, 0 FROM snapshots WHERE id = ?"
            " UNION ALL"
            " SELECT s.id, s.parent_id, chain.depth + 1"
            " FROM snapshots s JOIN chain ON s.id = chain.parent_id)"
            " SELECT id FROM chain ORDER BY depth",
            (parent_id,),
        ).fetchall()
        return tuple(str(r[0]) for r in rows)

    def _need_write(self) -> None:
        if not self.writable:
            raise FailedPreconditionError("metastore transaction is read-only")

    # ------------------------------------------------------------------ reads

    def get_info(self, key: str) -> tuple[str, Info, Usage]:
        """``(id, info, usage-at-commit)`` of any snapshot."""
        _require_key(key)
        row = self._must(key)
        return str(row["id"]), self._info(row), Usage(row["inodes"], row["size"])

    def get_snapshot(self, key: str) -> Snapshot:
        """An active or view snapshot with its parent chain; FailedPreconditionError if committed."""
        _require_key(key)
        row = self._must(key)
        kind = Kind(row["kind"])
        if kind not in (Kind.ACTIVE, Kind.VIEW):
            raise FailedPreconditionError(f"requested snapshot {key!r} not active or view")
        return Snapshot(str(row["id"]), kind, self._parents(row["parent_id"]))

    def walk_info(self) -> list[Info]:
        rows = self._c.execute(
            "SELECT s.*, p.key AS parent_key FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id"
            " ORDER BY s.key"
        ).fetchall()
        return [self._info(r) for r in rows]

    def id_map(self) -> dict[str, str]:
        """Every snapshot id mapped to its key."""
        return {str(r[0]): r[1] for r in self._c.execute("SELECT id, key FROM snapshots")}

    def has_children(self, key: str) -> bool:
        row = self._must(key)
        return (
            self._c.execute("SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1", (row["id"],)).fetchone()
            is not None
        )

    # ------------------------------------------------------------------ writes

    def create_snapshot(
        self, kind: Kind, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> Snapshot:
        self._need_write()
        if kind not in (Kind.ACTIVE, Kind.VIEW):
            raise InvalidArgumentError(
                f"snapshot type {kind} invalid; only snapshots of type Active or View can be created"
            )
        _require_key(key)
        parent_id: int | None = None
        if parent:
            prow = self._row(parent)
            if prow is None:
                raise NotFoundError(f"missing parent {parent!r}")
            if Kind(prow["kind"]) != Kind.COMMITTED:
                raise InvalidArgumentError(f"parent {parent!r} is not a committed snapshot")
            parent_id = prow["id"]
        if self._row(key) is not None:
            raise AlreadyExistsError(f"snapshot {key!r} already exists")
        now = time.time_ns()
        cur = self._c.execute(
            "INSERT INTO snapshots (key, kind, parent_id, labels, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, int(kind), parent_id, json.dumps(dict(labels or {}), sort_keys=True), now, now),
        )
        sid = cur.lastrowid
        assert sid is not None
        return Snapshot(str(sid), kind, self._parents(parent_id))

    def update_info(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """containerd's ``UpdateInfo``: only labels are mutable."""
        self._need_write()
        _require_key(info.name, "name")
        row = self._must(info.name)
        labels: dict[str, str] = json.loads(row["labels"])
        if fieldpaths:
            for fp in fieldpaths:
                if fp.startswith("labels."):
                    k = fp[len("labels.") :]
                    v = info.labels.get(k, "")
                    if v:
                        labels[k] = v
                    else:
                        labels.pop(k, None)
                elif fp == "labels":
                    labels = dict(info.labels)
                else:
                    raise InvalidArgumentError(f"cannot update {fp!r} field on snapshot {info.name!r}")
        else:
            labels = dict(info.labels)
        now = time.time_ns()
        self._c.execute(
            "UPDATE snapshots SET labels = ?, updated = ? WHERE id = ?",
            (json.dumps(labels, sort_keys=True), now, row["id"]),
        )
        return self._info(self._must(info.name))

    def remove(self, key: str) -> tuple[str, Kind]:
        """Delete the row of ``key``; FailedPreconditionError if it has children. Returns ``(id, kind)``."""
        self._need_write()
        _require_key(key)
        row = self._must(key)
        if self._c.execute("SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1", (row["id"],)).fetchone():
            raise FailedPreconditionError(f"cannot remove snapshot {key!r} with child")
        self._c.execute("DELETE FROM snapshots WHERE id = ?", (row["id"],))
        return str(row["id"]), Kind(row["kind"])

    def commit_active(
        self, key: str, name: str, usage: Usage, labels: Mapping[str, str] | None = None
    ) -> str:
        """Turn the active ``key`` into the committed ``name`` (same id).

        Labels are replaced by ``labels``, not inherited from the active snapshot.
        """
        self._need_write()
        _require_key(key)
        _require_key(name, "name")
        if self._row(name) is not None:
            raise AlreadyExistsError(f"committed snapshot {name!r} already exists")
        row = self._row(key)
        if row is None:
            raise NotFoundError(f"failed to get active snapshot {key!r}")
        if Kind(row["kind"]) != Kind.ACTIVE:
            raise FailedPreconditionError(f"snapshot {key!r} is not active")
        now = time.time_ns()
        self._c.execute(
            "UPDATE snapshots SET key = ?, kind = ?, labels = ?, created = ?, updated = ?,"
            " inodes = ?, size = ? WHERE id = ?",
            (
                name,
                int(Kind.COMMITTED),
                json.dumps(dict(labels or {}), sort_keys=True),
                now,
                now,
                usage.inodes,
                usage.size,
                row["id"],
            ),
        )
        return str(row["id"])


class MetaStore:
    """A snapshotter's metadata database (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-meta")
        self._conn: sqlite3.Connection | None = None
        # Read-only transactions run on the event loop's thread, on a connection of their own:
        # a lookup takes microseconds, a round trip through the worker thread far longer. WAL
        # lets them read while the worker writes.
        self._reader: sqlite3.Connection | None = None
        self._queued = 0  # steps submitted to the worker and not finished
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)  # idempotent; executescript commits on its own
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO meta (name, value) VALUES ('version', ?)", (str(SCHEMA_VERSION),)
                    )
                elif int(row[0]) > SCHEMA_VERSION:
                    raise FailedPreconditionError(
                        f"{self.path}: schema version {row[0]} is newer than this arun ({SCHEMA_VERSION})"
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _run(self, fn: Callable[[Transaction], T], writable: bool) -> T:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE" if writable else "BEGIN")
        try:
            result = fn(Transaction(conn, writable))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT" if writable else "ROLLBACK")
        return result

    async def _submit(self, fn: Callable[[Transaction], T], writable: bool) -> T:
        if self._closed:
            raise FailedPreconditionError(f"metastore {self.path} is closed")
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, self._run, fn, writable)
        self._queued += 1
        fut.add_done_callback(self._step_done)
        # Once started, a step runs to its end even if the caller is cancelled.
        return await asyncio.shield(fut)

    def _step_done(self, fut: asyncio.Future[Any]) -> None:
        self._queued -= 1

    async def open(self) -> None:
        """Create or open the database now (otherwise the first transaction does)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._connect)

    async def view(self, fn: Callable[[Transaction], T]) -> T:
        if self._closed:
            raise FailedPreconditionError(f"metastore {self.path} is closed")
        if self._queued:
            # A step still runs (its caller may have been cancelled): read after it, in order.
            return await self._submit(fn, False)
        conn = self._reader
        if conn is None:
            if self._conn is None:
                await self.open()  # the schema, created by the writer's connection
            if self._reader is None:
                reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                reader.row_factory = sqlite3.Row
                reader.execute("PRAGMA foreign_keys=ON")
                self._reader = reader
            conn = self._reader
        conn.execute("BEGIN")
        try:
            return fn(Transaction(conn, False))
        finally:
            conn.execute("ROLLBACK")

    async def update(self, fn: Callable[[Transaction], T]) -> T:
        return await self._submit(fn, True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.close()
            self._reader = None

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)
