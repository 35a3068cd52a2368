"""The metadata database: SQLite in WAL mode through aiosqlite.

Every store call runs inside one transaction. ``update()`` and ``view()``
join the transaction already open in this context (a contextvar), so nested
store calls share it, as containerd's ``bolt.go`` ``update``/``view`` do.
Writes are serialised on one connection; views use a second connection and
so never wait for a writer (WAL). Callbacks registered with
``Tx.on_commit`` (event publishing) run only after a successful commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import inspect
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import aiosqlite

from arun.errdefs import InternalError

log = logging.getLogger(__name__)

_current: ContextVar[Tx | None] = ContextVar("metadata_tx", default=None)

Callback = Callable[[], Awaitable[None] | None]


class Tx:
    """One open transaction."""

    def __init__(self, conn: aiosqlite.Connection, writable: bool) -> None:
        self.conn = conn
        self.writable = writable
        self._on_commit: list[Callback] = []

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run a statement; returns the number of rows changed."""
        cur = await self.conn.execute(sql, tuple(params))
        try:
            return cur.rowcount
        finally:
            await cur.close()

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        await self.conn.executemany(sql, [tuple(r) for r in rows])

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        cur = await self.conn.execute(sql, tuple(params))
        try:
            row: sqlite3.Row | None = await cur.fetchone()
            return row
        finally:
            await cur.close()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        rows = await self.conn.execute_fetchall(sql, tuple(params))
        return list(rows)

    def on_commit(self, callback: Callback) -> None:
        """Run ``callback`` after this transaction commits (never if it rolls back)."""
        if not self.writable:
            raise InternalError("on_commit in a read-only transaction")
        self._on_commit.append(callback)


def current() -> Tx | None:
    """The transaction open in this context, if any."""
    return _current.get()


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._writer.execute("PRAGMA journal_mode=WAL")
        await migrate(self._writer)
        self._reader = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # NORMAL in WAL mode survives a process crash (kill -9); only power loss can lose
        # the last commits, and the database stays consistent either way.
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @contextlib.asynccontextmanager
    async def update(self) -> AsyncIterator[Tx]:
        """A read-write transaction (or the one already open in this context)."""
        outer = _current.get()
        if outer is not None:
            if not outer.writable:
                raise InternalError("write attempted inside a read-only transaction")
            yield outer
            return
        if self._writer is None:
            raise InternalError("metadata database is not open")
        conn = self._writer
        async with self._write_lock:
            tx = Tx(conn, writable=True)
            token = _current.set(tx)
            try:
                begin = asyncio.ensure_future(conn.execute("BEGIN IMMEDIATE"))
                try:
                    await asyncio.shield(begin)
                except asyncio.CancelledError:
                    # The BEGIN still runs on the connection's thread. Queue a ROLLBACK behind it
                    # (aiosqlite runs one connection's calls in order, and this task is scheduled
                    # before the next writer's) so that writer does not find a transaction open.
                    begin.add_done_callback(_consume)
                    asyncio.ensure_future(conn.execute("ROLLBACK")).add_done_callback(_consume)
                    raise
                try:
                    yield tx
                except BaseException:
                    await asyncio.shield(conn.execute("ROLLBACK"))
                    raise
                await asyncio.shield(conn.execute("COMMIT"))
            finally:
                _current.reset(token)
        for cb in tx._on_commit:
            try:
                result = cb()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("post-commit callback failed")

    @contextlib.asynccontextmanager
    async def view(self) -> AsyncIterator[Tx]:
        """A read-only, consistent snapshot (or the transaction already open in this context)."""
        outer = _current.get()
        if outer is not None:
            yield outer
            return
        if self._reader is None:
            raise InternalError("metadata database is not open")
        conn = self._reader
        async with self._read_lock:
            tx = Tx(conn, writable=False)
            token = _current.set(tx)
            try:
                await conn.execute("BEGIN")
                try:
                    yield tx
                finally:
                    await asyncio.shield(conn.execute("ROLLBACK"))
            finally:
                _current.reset(token)


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a background call's outcome (a failed ROLLBACK after a failed BEGIN is fine)."""
    if not fut.cancelled():
        fut.exception()


_MIGRATION_NAME = re.compile(r"^(\d{4})_\w+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, sql) of every migration shipped with arun, in order."""
    out = []
    for entry in importlib.resources.files("arun.metadata.migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            out.append((int(m.group(1)), entry.name, entry.read_text()))
    out.sort()
    versions = [v for v, _, _ in out]
    if versions != list(range(1, len(out) + 1)):
        raise InternalError(f"metadata migrations are not numbered 1..n: {versions}")
    return out


async def migrate(conn: aiosqlite.Connection) -> int:
    """Bring the schema to the newest version; each step is one transaction."""
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    steps = migrations()
    if version > len(steps):
        raise InternalError(
            f"metadata schema version {version} is newer than this arun understands ({len(steps)})"
        )
    for v, name, sql in steps[version:]:
        log.info("applying metadata migration %s", name)
        await conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {v};\nCOMMIT;")
    return len(steps)
