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
the ``ROLLBACK`` of a view costs no wake-up of the loop. Writes whose outcome
nobody waits for (``Tx.execute_later``) ride along with the next call.

``Database.lookup`` is the cheap path for a single-row get: one statement
needs no BEGIN/ROLLBACK, and its row is kept in a small per-table cache until
a write transaction that may have changed that table ends (see there). A
lookup the cache cannot answer runs on the event loop's thread, on a
read-only connection of its own: a keyed one-row read takes microseconds, a
round trip through a worker thread far longer (WAL lets it read while the
writer writes; should SQLite ever answer it with "busy", it goes through the
reader's worker instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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


# A statement queued by ``Tx.execute_later``: sql, parameters, the table it writes, and what to
# call with the number of rows it changed once it ran (or None).
Later = tuple[str, tuple[Any, ...], str, "Callable[[int], None] | None"]
# One statement's work on the worker: (raw connection, sql, parameters) -> result.
Op = Callable[[sqlite3.Connection, str, Any], Any]


def _changes(raw: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    cur = raw.execute(sql, params)
    try:
        return cur.rowcount
    finally:
        cur.close()


def _fetchone(raw: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    cur = raw.execute(sql, params)
    try:
        return cur.fetchone()
    finally:
        cur.close()


def _fetchall(raw: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    cur = raw.execute(sql, params)
    try:
        return cur.fetchall()
    finally:
        cur.close()


def _lookup(sql: str, params: tuple[Any, ...], raw: sqlite3.Connection) -> Any:
    """A ``Database.lookup``: one statement, outside any transaction."""
    return _fetchone(raw, sql, params)


def _executemany(raw: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    raw.executemany(sql, rows).close()


def _step(
    begin: str | None, later: list[Later], op: Op, sql: str, params: Any, raw: sqlite3.Connection
) -> tuple[list[int], Any]:
    """One call into the worker: the transaction's BEGIN if it is the first, the statements
    queued by ``execute_later`` (their rows changed), then this statement (its result)."""
    if begin:
        _begin(raw, begin)
    changed = [_changes(raw, *stmt[:2]) for stmt in later]
    return changed, op(raw, sql, params)


def _commit(begin: str | None, later: list[Later], raw: sqlite3.Connection) -> list[int]:
    try:
        if begin:
            _begin(raw, begin)
        changed = [_changes(raw, *stmt[:2]) for stmt in later]
        if raw.in_transaction:
            raw.execute("COMMIT")
    except BaseException:
        # A failed statement or COMMIT (SQLITE_BUSY, I/O error) leaves the transaction open.
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        raise
    return changed


def _rollback(raw: sqlite3.Connection) -> None:
    if raw.in_transaction:
        raw.execute("ROLLBACK")


def _end_view(raw: sqlite3.Connection) -> None:
    """A view's ROLLBACK, run with nobody waiting for it: failures are logged here."""
    try:
        _rollback(raw)
    except Exception:
        log.exception("ending a metadata read transaction failed")


# -- which tables a statement reads or writes (for the lookup cache) --------------------------------

ALL_TABLES = "*"

# A SELECT from one table, with no subquery or join: "SELECT … FROM t [WHERE|ORDER|LIMIT …]".
_ONE_TABLE = re.compile(r"\s*SELECT\b.*?\bFROM\s+([A-Za-z_]\w*)\s*(?:$|(?:WHERE|ORDER|LIMIT)\b)", re.I | re.S)
_FROM_OR_JOIN = re.compile(r"\b(?:FROM|JOIN)\b", re.I)
_WRITE_TO = re.compile(
    r"\s*(?:(?:INSERT|REPLACE)(?:\s+OR\s+\w+)?\s+INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM)\s+([A-Za-z_]\w*)(?![\w.])(?!\s*\.)",
    re.IGNORECASE,
)
_READ_ONLY = re.compile(r"\s*SELECT\b", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def read_table(sql: str) -> str | None:
    """The one table a plain SELECT reads, or None (a join, a subquery, anything else)."""
    m = _ONE_TABLE.match(sql)
    if m is None or len(_FROM_OR_JOIN.findall(sql)) != 1:
        return None
    return m.group(1).lower()


@functools.lru_cache(maxsize=1024)
def written_table(sql: str) -> str:
    """The table a statement writes: "" for a SELECT, ``ALL_TABLES`` when it cannot be told."""
    if _READ_ONLY.match(sql):
        return ""
    m = _WRITE_TO.match(sql)
    return m.group(1).lower() if m else ALL_TABLES


class Tx:
    """One open transaction.

    Its first statement also begins it (``BEGIN`` for a view, ``BEGIN IMMEDIATE`` for a write).
    """

    __slots__ = ("_begin", "_begun", "_later", "_on_commit", "conn", "writable", "written")

    def __init__(self, conn: aiosqlite.Connection, writable: bool) -> None:
        self.conn = conn
        self.writable = writable
        self._begin: str | None = "BEGIN IMMEDIATE" if writable else "BEGIN"
        self._begun = False
        self._later: list[Later] = []
        self._on_commit: list[Callback] = []
        # Tables this transaction may have changed (``ALL_TABLES``: any); counted from the moment
        # a statement is queued, unless it reports that it changed no row.
        self.written: set[str] = set()

    def _prelude(self) -> tuple[str | None, list[Later]]:
        """What the next call into the worker must run first: the BEGIN (once only) and the
        statements queued by ``execute_later``."""
        begin = self._begin
        if begin is not None:
            self._begin = None
            # Set before the call is queued: whatever happens to it, the end of this transaction
            # queues a ROLLBACK (or COMMIT) behind it.
            self._begun = True
        later = self._later
        if later:
            self._later = []
        return begin, later

    def _wrote(self, later: list[Later], changed: list[int] | None) -> None:
        """Record the tables the ``later`` statements changed (all of them if unknown)."""
        for i, (_, _, table, on_changed) in enumerate(later):
            if table and (changed is None or changed[i]):
                self.written.add(table)
            if on_changed is not None and changed is not None:
                on_changed(changed[i])

    async def _run(self, op: Op, sql: str, params: Any, table: str, counted: bool) -> Any:
        """Run one statement (after the prelude). ``table``: what it writes; ``counted``: its
        result is the number of rows it changed."""
        begin, later = self._prelude()
        if table and not counted:
            self.written.add(table)
        fut = _call(self.conn, partial(_step, begin, later, op, sql, params))
        try:
            changed, result = await fut
        except BaseException:
            # Failed, or still to run (its caller was cancelled).
            self._wrote(later, None)
            if table:
                self.written.add(table)
            raise
        self._wrote(later, changed)
        if table and result:  # 0: no row changed here, nor (then) through a foreign key action
            self.written.add(table)
        return result

    def _writes(self, sql: str) -> str:
        return written_table(sql) if self.writable else ""

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run a statement; returns the number of rows changed."""
        changed: int = await self._run(_changes, sql, tuple(params), self._writes(sql), True)
        return changed

    def execute_later(
        self, sql: str, params: Iterable[Any] = (), on_changed: Callable[[int], None] | None = None
    ) -> None:
        """Queue a write whose outcome nobody waits for (``INSERT OR IGNORE`` of a namespace,
        of a lease's resource): it runs in the same call into the worker as this transaction's
        next statement, or its COMMIT, and its error is raised there. ``on_changed(rows)``
        runs on the loop once it ran (before the post-commit callbacks when it ran with the
        COMMIT; it may still register one); not if it, or the call it ran in, failed."""
        if not self.writable:
            raise InternalError("write attempted inside a read-only transaction")
        self._later.append((sql, tuple(params), written_table(sql), on_changed))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        await self._run(_executemany, sql, [tuple(r) for r in rows], self._writes(sql), False)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        # A write here is an INSERT … RETURNING or the like: counted as a change.
        row: sqlite3.Row | None = await self._run(_fetchone, sql, tuple(params), self._writes(sql), False)
        return row

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        rows: list[sqlite3.Row] = await self._run(_fetchall, sql, tuple(params), self._writes(sql), False)
        return rows

    def on_commit(self, callback: Callback) -> None:
        """Run ``callback`` after this transaction commits (never if it rolls back)."""
        if not self.writable:
            raise InternalError("on_commit in a read-only transaction")
        self._on_commit.append(callback)


def current() -> Tx | None:
    """The transaction open in this context, if any."""
    return _current.get()


# How many rows ``Database.lookup`` keeps per table (least recently used first out). A container's
# row carries its spec (some KiB): this bounds the cache to a few MiB at worst.
LOOKUP_CACHE_SIZE = 128


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # ``lookup``'s own connection, used on the loop's thread (see the module docstring).
        self._inline: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        # Rows read by ``lookup``, per table, keyed by (sql, params). A table's rows are dropped
        # (and its generation moved on) whenever a write transaction that may have changed it
        # ends, once the loop knows its COMMIT has run.
        self._cache: dict[str, dict[tuple[str, tuple[Any, ...]], sqlite3.Row | None]] = {}
        self._generations: dict[str, int] = {}
        # Tables a write to a table may change too (foreign key actions), from the schema; None:
        # any write may change any table (the schema has triggers or views).
        self._affects: dict[str, frozenset[str]] | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._writer.execute("PRAGMA journal_mode=WAL")
        await migrate(self._writer)
        self._affects = await _write_effects(self._writer)
        self._reader = await self._connect()
        # Views and lookups only read: a write through them would also slip past the cache's
        # invalidation, so SQLite refuses it.
        await self._reader.execute("PRAGMA query_only=ON")
        self._inline = await asyncio.to_thread(self._connect_inline)

    def _connect_inline(self) -> sqlite3.Connection:
        # Never waits for a lock (busy_timeout 0: "busy" falls back to the worker, see lookup);
        # read-only like the reader, so nothing writes around the cache's invalidation.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return conn

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
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None
        self._invalidate({ALL_TABLES})

    def _invalidate(self, written: set[str]) -> None:
        """Forget cached rows of the tables a write transaction may have changed."""
        affects = self._affects
        if ALL_TABLES in written or affects is None:
            tables: Iterable[str] = list(self._generations)
        else:
            tables = set(written)
            for t in written:
                tables |= affects.get(t, frozenset())
        generations = self._generations
        for t in tables:
            if t in generations:
                generations[t] += 1
                self._cache.pop(t, None)

    async def lookup(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        """The first row of one read-only statement: in the transaction open in this context if
        any, else on its own (one statement is its own consistent snapshot: no BEGIN, no
        ROLLBACK), served from a small cache of such reads while no write has committed since.

        Only a SELECT from one table is cached. A cached row is never older than the last
        write whose ``update()`` has returned: a row is cached only if no write transaction
        that may have changed its table ended while it was read, and such a write drops the
        table's rows when it ends (after its COMMIT ran, before ``update()`` returns).
        """
        tx = _current.get()
        if tx is not None:
            return await tx.fetchone(sql, params)
        if self._reader is None:
            raise InternalError("metadata database is not open")
        args = tuple(params)
        table = read_table(sql)
        if table is None:
            return await self._read_one(sql, args)
        key = (sql, args)
        rows = self._cache.get(table)
        if rows is not None and key in rows:
            row = rows[key] = rows.pop(key)  # now the most recently used
            return row
        generation = self._generations.setdefault(table, 0)
        row = await self._read_one(sql, args)
        if generation == self._generations[table]:
            rows = self._cache.setdefault(table, {})
            rows[key] = row
            if len(rows) > LOOKUP_CACHE_SIZE:
                del rows[next(iter(rows))]
        return row

    async def _read_one(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Row | None:
        """One statement's first row: inline on the loop's own connection, or (if SQLite says
        the database is busy, which a WAL reader only meets while the WAL is being recovered or
        reset) through the reader's worker, which may wait for it."""
        conn = self._inline
        if conn is not None:
            try:
                row: sqlite3.Row | None = _lookup(sql, args, conn)
                return row
            except sqlite3.OperationalError as e:
                code = getattr(e, "sqlite_errorcode", None)  # with its extended bits
                if code is None or code & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                log.debug("inline metadata read was refused (%s); reading through the worker", e)
        if self._reader is None:
            raise InternalError("metadata database is not open")
        async with self._read_lock:
            row = await _call(self._reader, partial(_lookup, sql, args))
        return row

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
                if tx._begun or tx._later:
                    begin, later = tx._prelude()
                    try:
                        changed, cancelled = await _wait_out(_call(conn, partial(_commit, begin, later)))
                    except BaseException:
                        tx._wrote(later, None)
                        raise
                    else:
                        tx._wrote(later, changed)
                    finally:
                        if tx.written:
                            self._invalidate(tx.written)
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


async def _wait_out(fut: asyncio.Future[T]) -> tuple[T, bool]:
    """Wait for a queued call that cannot be withdrawn (a COMMIT that is queued will happen):
    its result (or error), and whether this task was cancelled meanwhile.

    The caller then delivers the cancellation after the post-commit callbacks, so that nobody
    hears "cancelled" for a change that was made without its events.
    """
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancelled = True
    return fut.result(), cancelled


# Foreign key actions that change the referring rows when the referred row changes.
_CHANGES_CHILD = {"CASCADE", "SET NULL", "SET DEFAULT"}


async def _write_effects(conn: aiosqlite.Connection) -> dict[str, frozenset[str]] | None:
    """For each table, the tables a write to it may change through foreign key actions
    (transitively); None if the schema has triggers or views (then any write may change any
    table, as far as the lookup cache knows)."""
    async with conn.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'trigger', 'view')"
    ) as cur:
        objects = [(r[0], r[1]) for r in await cur.fetchall()]
    if any(kind != "table" for kind, _ in objects):
        return None
    children: dict[str, set[str]] = {}
    for _, name in objects:
        async with conn.execute("SELECT * FROM pragma_foreign_key_list(?)", (name,)) as cur:
            for fk in await cur.fetchall():
                if {fk["on_delete"].upper(), fk["on_update"].upper()} & _CHANGES_CHILD:
                    children.setdefault(fk["table"].lower(), set()).add(name.lower())
    effects: dict[str, frozenset[str]] = {}
    for table in children:
        seen: set[str] = set()
        todo = [table]
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        effects[table] = frozenset(seen)
    return effects


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
