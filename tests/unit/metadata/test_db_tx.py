"""Transactions with one call into aiosqlite's thread per statement: BEGIN folded into the first
statement, a view's ROLLBACK queued without waiting, ``execute_later`` and the lookup cache."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import threading
from typing import Any

import pytest

from arun.errdefs import InternalError
from arun.metadata import db as dbmod
from arun.metadata.db import Database, read_table, written_table
from arun.metadata.namespaces import SqlNamespaceStore, ensure

LABELS = "SELECT labels FROM namespaces WHERE name = ?"


async def in_transaction(db: Database, *, reader: bool) -> bool:
    """Whether the reader's (writer's) connection is inside a transaction, asked on its thread
    behind everything queued to it so far."""
    conn = db._reader if reader else db._writer
    assert conn is not None
    result: bool = await dbmod._call(conn, lambda raw: raw.in_transaction)
    return result


async def create(db: Database, name: str, labels: str = "{}") -> None:
    async with db.update() as tx:
        await tx.execute("INSERT INTO namespaces (name, labels, created_at) VALUES (?, ?, 0)", (name, labels))


async def set_labels(db: Database, name: str, labels: str) -> None:
    async with db.update() as tx:
        await tx.execute("UPDATE namespaces SET labels = ? WHERE name = ?", (labels, name))


# -- views ----------------------------------------------------------------------------------------


async def test_view_ends_its_transaction_without_waiting(db: Database) -> None:
    async with db.view() as tx:
        assert await tx.fetchone("SELECT 1") is not None
        assert await in_transaction(db, reader=True)
    assert not await in_transaction(db, reader=True)


async def test_a_view_without_statements_opens_no_transaction(db: Database) -> None:
    async with db.view() as tx:
        assert not tx._begun
    assert not await in_transaction(db, reader=True)


async def _cancel_after(task: asyncio.Task[None], steps: int) -> None:
    """Cancel ``task`` after ``steps`` turns of the loop, and see it end cancelled."""
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5, 8])
async def test_cancelled_view_leaves_no_open_transaction(
    db: Database, steps: int, caplog: pytest.LogCaptureFixture
) -> None:
    await create(db, "a")
    started = asyncio.Event()

    async def reader() -> None:
        async with db.view() as tx:
            started.set()
            await tx.fetchone(LABELS, ("a",))
            await tx.fetchall("SELECT name FROM namespaces")
            await asyncio.sleep(3600)

    task = asyncio.create_task(reader())
    await started.wait()
    await _cancel_after(task, steps)
    with caplog.at_level(logging.WARNING, logger="arun.metadata.db"):
        assert not await in_transaction(db, reader=True)
        # The next view starts a fresh snapshot: it sees a write made after the cancelled one.
        await set_labels(db, "a", '{"k": "v"}')
        async with db.view() as tx:
            row = await tx.fetchone(LABELS, ("a",))
        assert row is not None and row["labels"] == '{"k": "v"}'
    assert "left inside a transaction" not in caplog.text


async def test_view_after_a_write_sees_it(db: Database) -> None:
    await create(db, "a", "{}")
    for i in range(20):
        async with db.view() as tx:
            before = await tx.fetchone(LABELS, ("a",))
        assert before is not None and before["labels"] == f'{{"n": "{i - 1}"}}' if i else "{}"
        await set_labels(db, "a", f'{{"n": "{i}"}}')
        async with db.view() as tx:
            row = await tx.fetchone(LABELS, ("a",))
        assert row is not None and row["labels"] == f'{{"n": "{i}"}}'


async def test_a_view_is_one_snapshot(db: Database) -> None:
    await create(db, "a", "{}")
    async with db.view() as tx:
        first = await tx.fetchone(LABELS, ("a",))
        # commits on the writer meanwhile (in a context of its own, outside this view)
        await asyncio.create_task(set_labels(db, "a", '{"k": "v"}'), context=contextvars.Context())
        second = await tx.fetchone(LABELS, ("a",))
    assert first is not None and second is not None
    assert first["labels"] == second["labels"] == "{}"
    assert (await db.lookup(LABELS, ("a",)))["labels"] == '{"k": "v"}'  # type: ignore[index]


async def test_views_cannot_write(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
        async with db.view() as tx:
            await tx.execute("INSERT INTO namespaces (name, created_at) VALUES ('x', 0)")
    with pytest.raises(InternalError):
        async with db.view() as tx:
            tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('x', 0)")
    assert await SqlNamespaceStore(db).list() == []


# -- writes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5, 8])
async def test_cancelled_update_rolls_back_and_leaves_no_open_transaction(db: Database, steps: int) -> None:
    started = asyncio.Event()

    async def writer() -> None:
        async with db.update() as tx:
            started.set()
            await ensure(tx, "gone")
            await tx.execute("UPDATE namespaces SET labels = '{}' WHERE name = 'gone'")
            await tx.fetchone("SELECT 1 FROM namespaces WHERE name = 'gone'")
            await asyncio.sleep(3600)

    task = asyncio.create_task(writer())
    await started.wait()
    await _cancel_after(task, steps)
    assert not await in_transaction(db, reader=False)
    assert await SqlNamespaceStore(db).list() == []
    await create(db, "after")
    assert await SqlNamespaceStore(db).list() == ["after"]


async def test_an_update_without_statements_opens_no_transaction(db: Database) -> None:
    called: list[int] = []
    async with db.update() as tx:
        tx.on_commit(lambda: called.append(1))
    assert called == [1]
    assert not await in_transaction(db, reader=False)


async def test_cancelled_while_committing_the_commit_stands_and_events_run(db: Database) -> None:
    called: list[str] = []
    gate = threading.Event()
    entered = asyncio.Event()

    async def writer() -> None:
        async with db.update() as tx:
            await ensure(tx, "kept")
            tx.on_commit(lambda: called.append("event"))
            # Hold the writer's thread so that the COMMIT queued next waits behind this.
            assert db._writer is not None
            dbmod._post(db._writer, lambda raw: gate.wait(10) and None)
            entered.set()

    task = asyncio.create_task(writer())
    await entered.wait()
    await asyncio.sleep(0.01)  # now awaiting the COMMIT
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # a queued COMMIT is waited for, even when cancelled
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert called == ["event"]
    assert await SqlNamespaceStore(db).list() == ["kept"]


async def test_nested_transactions_join(db: Database) -> None:
    async with db.update() as tx:
        await ensure(tx, "a")
        async with db.update() as inner:
            assert inner is tx
        async with db.view() as view:
            assert view is tx  # a view inside a write joins it and sees its changes
            assert await view.fetchone(LABELS, ("a",)) is not None
        # so does a lookup, which neither uses nor fills the cache here
        assert await db.lookup(LABELS, ("a",)) is not None
        assert (LABELS, ("a",)) not in db._cache.get("namespaces", {})
    async with db.view() as outer:
        async with db.view() as inner_view:
            assert inner_view is outer
        with pytest.raises(InternalError):
            async with db.update():
                pass
    assert await SqlNamespaceStore(db).list() == ["a"]


async def test_lookup_inside_a_rolled_back_write_does_not_leak(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.update() as tx:
            await ensure(tx, "ghost")
            assert await db.lookup(LABELS, ("ghost",)) is not None
            raise RuntimeError("roll back")
    assert await db.lookup(LABELS, ("ghost",)) is None


async def test_execute_later_runs_with_the_next_statement_or_the_commit(db: Database) -> None:
    async with db.update() as tx:
        tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('a', 0)")
        row = await tx.fetchone("SELECT name FROM namespaces WHERE name = 'a'")
        assert row is not None
        tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('b', 0)")
    assert await SqlNamespaceStore(db).list() == ["a", "b"]


async def test_execute_later_errors_surface_and_roll_back(db: Database) -> None:
    await create(db, "a")
    with pytest.raises(sqlite3.IntegrityError):
        async with db.update() as tx:
            tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('b', 0)")
            tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('a', 0)")  # exists
            await tx.fetchone("SELECT 1")
    with pytest.raises(sqlite3.IntegrityError):
        async with db.update() as tx:
            tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('c', 0)")
            tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('a', 0)")  # at COMMIT
    called: list[int] = []
    with pytest.raises(sqlite3.IntegrityError):
        async with db.update() as tx:
            tx.on_commit(lambda: called.append(1))
            tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('a', 0)")
    assert called == []
    assert not await in_transaction(db, reader=False)
    assert await SqlNamespaceStore(db).list() == ["a"]


# -- lookup and its cache -------------------------------------------------------------------------


async def test_lookup_sees_every_write_that_returned(db: Database) -> None:
    assert await db.lookup(LABELS, ("a",)) is None  # a cached miss
    await create(db, "a", "{}")
    for i in range(10):
        row = await db.lookup(LABELS, ("a",))
        assert row is not None and row["labels"] == (f'{{"n": "{i - 1}"}}' if i else "{}")
        assert (await db.lookup(LABELS, ("a",)))["labels"] == row["labels"]  # type: ignore[index]
        await set_labels(db, "a", f'{{"n": "{i}"}}')
    async with db.update() as tx:
        await tx.execute("DELETE FROM namespaces WHERE name = 'a'")
    assert await db.lookup(LABELS, ("a",)) is None


async def test_writes_drop_only_the_tables_they_change(db: Database) -> None:
    await create(db, "a")
    key = (LABELS, ("a",))
    assert await db.lookup(*key) is not None
    assert key in db._cache["namespaces"]
    async with db.update() as tx:  # another table
        await tx.execute("INSERT INTO leases (namespace, id, created_at) VALUES ('a', 'l', 0)")
    assert key in db._cache["namespaces"]
    async with db.update() as tx:  # the table, but no row changed
        await tx.execute("DELETE FROM namespaces WHERE name = 'nothing'")
        await ensure(tx, "a")  # exists: INSERT OR IGNORE changes nothing
    assert key in db._cache["namespaces"]
    async with db.update() as tx:  # a changed row
        await ensure(tx, "b")
    assert key not in db._cache.get("namespaces", {})


async def test_foreign_key_actions_drop_the_referring_tables(db: Database) -> None:
    await create(db, "a")
    async with db.update() as tx:
        await tx.execute("INSERT INTO leases (namespace, id, created_at) VALUES ('a', 'l', 0)")
        await tx.execute(
            "INSERT INTO lease_resources (namespace, lease, type, id) VALUES ('a', 'l', 'content', 'x')"
        )
    sql = "SELECT id FROM lease_resources WHERE namespace = ? AND lease = ?"
    assert await db.lookup(sql, ("a", "l")) is not None
    async with db.update() as tx:
        await tx.execute("DELETE FROM leases WHERE namespace = 'a' AND id = 'l'")  # cascades
    assert await db.lookup(sql, ("a", "l")) is None


async def test_unparsed_writes_drop_everything(db: Database) -> None:
    await create(db, "a")
    assert await db.lookup(LABELS, ("a",)) is not None
    async with db.update() as tx:
        await tx.execute('WITH x AS (SELECT 1) UPDATE namespaces SET labels = \'{"w": "1"}\'')
    row = await db.lookup(LABELS, ("a",))
    assert row is not None and row["labels"] == '{"w": "1"}'


async def test_a_read_that_raced_a_write_is_not_cached(db: Database, monkeypatch: Any) -> None:
    await create(db, "a", "{}")
    read = threading.Event()
    written = threading.Event()
    real = dbmod._lookup

    def slow_lookup(sql: str, params: tuple[Any, ...], raw: sqlite3.Connection) -> Any:
        row = real(sql, params, raw)  # the old row
        read.set()
        written.wait(10)  # the write commits (and drops the cache) before this answer arrives
        return row

    monkeypatch.setattr(dbmod, "_lookup", slow_lookup)
    # Only a read through the reader's worker can race a write (an inline read runs on the loop,
    # where writes end): the path a lookup takes when the inline read is refused.
    monkeypatch.setattr(db, "_inline", None)
    task = asyncio.create_task(db.lookup(LABELS, ("a",)))
    await asyncio.to_thread(read.wait, 10)
    await set_labels(db, "a", '{"k": "v"}')
    written.set()
    stale = await task
    assert stale is not None and stale["labels"] == "{}"  # concurrent with the write: either is fine
    monkeypatch.setattr(dbmod, "_lookup", real)
    row = await db.lookup(LABELS, ("a",))
    assert row is not None and row["labels"] == '{"k": "v"}'


async def test_lookups_the_cache_cannot_answer_run_on_the_loop(db: Database, monkeypatch: Any) -> None:
    await create(db, "a", '{"k": "v"}')
    threads: list[int] = []
    real = dbmod._lookup

    def recording(sql: str, params: tuple[Any, ...], raw: sqlite3.Connection) -> Any:
        threads.append(threading.get_ident())
        return real(sql, params, raw)

    monkeypatch.setattr(dbmod, "_lookup", recording)
    join = "SELECT n.labels FROM namespaces n LEFT JOIN leases l ON l.namespace = n.name WHERE n.name = ?"
    row = await db.lookup(LABELS, ("a",))  # a miss, then cached
    assert row is not None and row["labels"] == '{"k": "v"}'
    assert (await db.lookup(join, ("a",)))["labels"] == '{"k": "v"}'  # type: ignore[index]
    assert threads == [threading.get_ident()] * 2
    # The inline connection keeps no read transaction (and so no old snapshot) open between reads.
    assert db._inline is not None and not db._inline.in_transaction
    await set_labels(db, "a", '{"k": "w"}')
    assert (await db.lookup(LABELS, ("a",)))["labels"] == '{"k": "w"}'  # type: ignore[index]
    assert (await db.lookup(join, ("a",)))["labels"] == '{"k": "w"}'  # type: ignore[index]
    # The inline connection cannot write (so nothing writes around the cache's invalidation).
    with pytest.raises(sqlite3.OperationalError):
        db._inline.execute("DELETE FROM namespaces")


async def test_a_lookup_refused_as_busy_reads_through_the_worker(db: Database, monkeypatch: Any) -> None:
    await create(db, "a", '{"k": "v"}')
    real = dbmod._lookup
    threads: list[int] = []

    def busy_inline(sql: str, params: tuple[Any, ...], raw: sqlite3.Connection) -> Any:
        if raw is db._inline:
            e = sqlite3.OperationalError("database is locked")
            e.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
            raise e
        threads.append(threading.get_ident())
        return real(sql, params, raw)

    monkeypatch.setattr(dbmod, "_lookup", busy_inline)
    row = await db.lookup(LABELS, ("a",))
    assert row is not None and row["labels"] == '{"k": "v"}'
    assert len(threads) == 1 and threads[0] != threading.get_ident()  # the reader's worker
    await set_labels(db, "a", '{"k": "w"}')
    assert (await db.lookup(LABELS, ("a",)))["labels"] == '{"k": "w"}'  # type: ignore[index]

    def broken_inline(sql: str, params: tuple[Any, ...], raw: sqlite3.Connection) -> Any:
        raise sqlite3.OperationalError("no such table: nothing")

    monkeypatch.setattr(dbmod, "_lookup", broken_inline)  # other errors are not retried
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await db.lookup("SELECT 1 FROM namespaces WHERE name = ?", ("zz",))


async def test_the_cache_is_bounded(db: Database) -> None:
    for i in range(dbmod.LOOKUP_CACHE_SIZE + 50):
        await db.lookup(LABELS, (f"n{i}",))
    assert len(db._cache["namespaces"]) == dbmod.LOOKUP_CACHE_SIZE
    # least recently used out: the first ones are gone, the last one is there
    assert (LABELS, ("n0",)) not in db._cache["namespaces"]
    assert (LABELS, (f"n{dbmod.LOOKUP_CACHE_SIZE + 49}",)) in db._cache["namespaces"]


async def test_only_one_table_selects_are_cached(db: Database) -> None:
    await create(db, "a")
    sql = "SELECT n.name FROM namespaces n JOIN leases l ON l.namespace = n.name WHERE n.name = ?"
    assert await db.lookup(sql, ("a",)) is None
    assert all(sql not in {k[0] for k in rows} for rows in db._cache.values())


def test_statement_tables() -> None:
    assert read_table("SELECT a, b FROM content WHERE namespace = ? AND digest = ?") == "content"
    assert read_table("select x from Images order by x") == "images"
    assert read_table("SELECT 1") is None
    assert read_table("SELECT * FROM a, b WHERE 1") is None
    assert read_table("SELECT * FROM a JOIN b ON 1") is None
    assert read_table("SELECT (SELECT 1 FROM b) FROM a") is None
    assert read_table("SELECT x FROM main.a") is None
    assert read_table("DELETE FROM a") is None
    assert written_table("INSERT OR IGNORE INTO namespaces (name) VALUES (?)") == "namespaces"
    assert written_table(" UPDATE content SET x = 1") == "content"
    assert written_table("DELETE FROM leases WHERE id = ?") == "leases"
    assert written_table("REPLACE INTO t VALUES (1)") == "t"
    assert written_table("INSERT INTO t(a) VALUES (1)") == "t"
    assert written_table("SELECT 1") == ""
    assert written_table("UPDATE main.content SET x = 1") == dbmod.ALL_TABLES
    assert written_table("WITH x AS (SELECT 1) DELETE FROM t") == dbmod.ALL_TABLES
    assert written_table("PRAGMA user_version = 3") == dbmod.ALL_TABLES
