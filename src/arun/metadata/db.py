"""The metadata database: SQLite in WAL mode through aiosqlite.

Every store call runs inside one transaction. ``update()`` and ``view()``
join the transaction already open in this context (a contextvar), so nested
store calls share it, as containerd's ``bolt.go`` ``update``/``view`` do.
Writes are serialised on one connection; views use a second connection and
so never wait for a writer (WAL). Callbacks registered with
``Tx.on_commit`` (event publishing) run only after a successful commit.

Each aiosqlite connection owns one worker thread that runs the calls queued
to it one at a time, in order. A statement is one call into that thread
(execute, fetch and cursor close together); the transaction's ``BEGIN`` is
folded into its first statement, so a transaction that never runs a statement
never opens. Ordering on that queue is what keeps transactions apart: a
transaction queues its ``COMMIT`` or ``ROLLBACK`` before it releases its
connection's lock, so the next one's first statement runs after it, even
when the previous holder was cancelled with a statement still queued. A
write awaits its ``COMMIT`` (the reply waits for durability); a view only
queues its ``ROLLBACK`` and returns (it changed nothing, and the next view
on that connection cannot start before it has run). Each call costs one
queue put, one wake-up of the worker and one ``call_soon_threadsafe`` back;
the ``ROLLBACK`` of a view costs no wake-up of the loop.
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
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from arun.errdefs import InternalError

log = logging.getLogger(__name__)

_current: ContextVar[Tx | None] = ContextVar("metadata_tx", default=None)

Callback = Callable[[], Awaitable[None] | None]

T = TypeVar("T")


# -- calls into a connection's worker thread ------------------------------------------------------
#
# aiosqlite has no public way to run one function of ours on its thread; every public method is one
# call per step (execute, then fetch, then close the cursor). These two helpers queue a call the way
# aiosqlite's own methods do: a (future, function) pair on the connection's queue, which its worker
# runs in order and answers with call_soon_threadsafe (or not at all when the future is None).
# ``_check`` verifies at open time that the aiosqlite in use still works this way.


def _check(conn: aiosqlite.Connection) -> None:
    queue = getattr(conn, "_tx", None)
    if not callable(getattr(queue, "put_nowait", None)) or not isinstance(
        getattr(conn, "_connection", None), sqlite3.Connection
    ):
        raise InternalError(
            f"aiosqlite {getattr(aiosqlite, '__version__', '?')} does not queue calls the way arun"
            " expects (Connection._tx, Connection._connection)"
        )


def _call(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
    """Queue ``fn(raw connection)`` on the connection's thread now; the future gets its outcome."""
    raw = conn._connection
    if raw is None:
        raise InternalError("metadata database is closed")
    fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    conn._tx.put_nowait((fut, partial(fn, raw)))
    return fut


def _post(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], None]) -> None:
    """Queue ``fn(raw connection)`` on the connection's thread now, without waiting for it."""
    raw = conn._connection
    if raw is not None:
        conn._tx.put_nowait((None, partial(fn, raw)))


# -- what runs on the worker thread ---------------------------------------------------------------


def _begin(raw: sqlite3.Connection, begin: str) -> None:
    if raw.in_transaction:
        # Cannot happen while every transaction queues its end before releasing the connection;
        # if it does, that transaction is over and must not leak into this one.
        log.warning("metadata connection was left inside a transaction; rolling it back")
        raw.execute("ROLLBACK")
    raw.execute(begin)


def _execute(begin: str | None, sql: str, params: tuple[Any, ...], raw: sqlite3.Connection) -> int:
    if begin:
        _begin(raw, begin)
    cur = raw.execute(sql, params)
    try:
        return cur.rowcount
    finally:
        cur.close()


def _executemany(begin: str | None, sql: str, rows: list[tuple[Any, ...]], raw: sqlite3.Connection) -> None:
    if begin:
        _begin(raw, begin)
    raw.executemany(sql, rows).close()


def _fetchone(begin: str | None, sql: str, params: tuple[Any, ...], raw: sqlite3.Connection) -> Any:
    if begin:
        _begin(raw, begin)
    cur = raw.execute(sql, params)
    try:
        return cur.fetchone()
    finally:
        cur.close()


def _fetchall(begin: str | None, sql: str, params: tuple[Any, ...], raw: sqlite3.Connection) -> list[Any]:
    if begin:
        _begin(raw, begin)
    cur = raw.execute(sql, params)
    try:
        return cur.fetchall()
    finally:
        cur.close()


def _commit(raw: sqlite3.Connection) -> None:
    if not raw.in_transaction:
        return
    try:
        raw.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (SQLITE_BUSY, I/O error) leaves the transaction open.
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise


def _rollback(raw: sqlite3.Connection) -> None:
    if raw.in_transaction:
        raw.execute("ROLLBACK")


def _end_view(raw: sqlite3.Connection) -> None:
    """A view's ROLLBACK, run with nobody waiting for it: failures are logged here."""
    try:
        _rollback(raw)
    except Exception:
        log.exception("ending a metadata read transaction failed")


class Tx:
    """One open transaction.

    Its first statement also begins it (``BEGIN`` for a view, ``BEGIN IMMEDIATE`` for a write).
    """

    __slots__ = ("_begin", "_begun", "_on_commit", "conn", "writable")

    def __init__(self, conn: aiosqlite.Connection, writable: bool) -> None:
        self.conn = conn
        self.writable = writable
        self._begin: str | None = "BEGIN IMMEDIATE" if writable else "BEGIN"
        self._begun = False
        self._on_commit: list[Callback] = []

    def _pending_begin(self) -> str | None:
        """The BEGIN the next statement must run first (once only)."""
        begin = self._begin
        if begin is not None:
            self._begin = None
            # Set before the call is queued: whatever happens to it, the end of this transaction
            # queues a ROLLBACK (or COMMIT) behind it.
            self._begun = True
        return begin

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run a statement; returns the number of rows changed."""
        return await _call(self.conn, partial(_execute, self._pending_begin(), sql, tuple(params)))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        await _call(self.conn, partial(_executemany, self._pending_begin(), sql, [tuple(r) for r in rows]))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = await _call(
            self.conn, partial(_fetchone, self._pending_begin(), sql, tuple(params))
        )
        return row

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        rows: list[sqlite3.Row] = await _call(
            self.conn, partial(_fetchall, self._pending_begin(), sql, tuple(params))
        )
        return rows

    def on_commit(self, callback: Callback) -> None:
        """Run ``callback`` after this transaction commits (never if it rolls back)."""
        if not self.writable:
            raise InternalError("on_commit in a read-only transaction")
        self._on_commit.append(callback)


def current() -> Tx | None:
    """The transaction open in this context, if any."""
    return _current.get()


# How many rows ``Database.lookup`` keeps (least recently used first out).
LOOKUP_CACHE_SIZE = 512


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        # Rows read by ``lookup`` since the last write committed, keyed by (sql, params). Emptied
        # (and ``_generation`` moved on) whenever a write transaction ends, once the loop knows
        # its COMMIT has run.
        self._cache: dict[tuple[str, tuple[Any, ...]], sqlite3.Row | None] = {}
        self._generation = 0

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._writer.execute("PRAGMA journal_mode=WAL")
        await migrate(self._writer)
        self._reader = await self._connect()
        # Views and lookups only read: a write through them would also slip past the cache's
        # invalidation, so SQLite refuses it.
        await self._reader.execute("PRAGMA query_only=ON")

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            _check(conn)
            conn.row_factory = sqlite3.Row
            # NORMAL in WAL mode survives a process crash (kill -9); only power loss can lose
            # the last commits, and the database stays consistent either way.
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None
        self._invalidate()

    def _invalidate(self) -> None:
        self._generation += 1
        self._cache.clear()

    async def lookup(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        """The first row of one read-only statement: in the transaction open in this context if
        any, else on its own (one statement is its own consistent snapshot: no BEGIN, no
        ROLLBACK), served from a small cache of such reads while no write has committed since.

        A cached row is never older than the last write whose ``update()`` has returned: a row
        is cached only if no write transaction ended while it was read, and every write
        empties the cache when it ends (after its COMMIT ran, before ``update()`` returns).
        """
        tx = _current.get()
        if tx is not None:
            return await tx.fetchone(sql, params)
        args = tuple(params)
        key = (sql, args)
        cache = self._cache
        if key in cache:
            row = cache[key] = cache.pop(key)  # now the most recently used
            return row
        if self._reader is None:
            raise InternalError("metadata database is not open")
        generation = self._generation
        async with self._read_lock:
            found: sqlite3.Row | None = await _call(self._reader, partial(_fetchone, None, sql, args))
        if generation == self._generation:
            cache[key] = found
            if len(cache) > LOOKUP_CACHE_SIZE:
                del cache[next(iter(cache))]
        return found

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
        cancelled = False
        async with self._write_lock:
            tx = Tx(conn, writable=True)
            token = _current.set(tx)
            try:
                try:
                    yield tx
                except BaseException:
                    if tx._begun:
                        # Queued behind every statement of this transaction (even one still
                        # queued by a cancelled caller) and before the next writer's BEGIN.
                        await asyncio.shield(_call(conn, _rollback))
                    raise
                if tx._begun:
                    try:
                        cancelled = await _wait_out(_call(conn, _commit))
                    finally:
                        self._invalidate()
            finally:
                _current.reset(token)
        for cb in tx._on_commit:
            try:
                result = cb()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("post-commit callback failed")
        if cancelled:
            raise asyncio.CancelledError

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
                yield tx
            finally:
                _current.reset(token)
                if tx._begun:
                    # Not awaited: the next view on this connection queues its BEGIN behind it.
                    _post(conn, _end_view)


async def _wait_out(fut: asyncio.Future[None]) -> bool:
    """Wait for a queued call that cannot be withdrawn (a COMMIT that is queued will happen);
    raises its error, else returns whether this task was cancelled meanwhile.

    The caller then delivers the cancellation after the post-commit callbacks, so that nobody
    hears "cancelled" for a change that was made without its events.
    """
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancelled = True
    fut.result()
    return cancelled


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
