from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from arun.errdefs import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from arun.metadata import db as dbmod
from arun.metadata.db import Database
from arun.metadata.namespaces import SqlNamespaceStore, ensure


async def test_schema_is_migrated_and_wal(db: Database, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "meta.db")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(dbmod.migrations())
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_reopen_keeps_data_and_does_not_remigrate(tmp_path: Path) -> None:
    d = Database(tmp_path / "meta.db")
    await d.open()
    await SqlNamespaceStore(d).create("one")
    await d.close()
    d = Database(tmp_path / "meta.db")
    await d.open()
    try:
        assert await SqlNamespaceStore(d).list() == ["one"]
    finally:
        await d.close()


async def test_rollback_on_error_and_commit_callbacks(db: Database) -> None:
    called: list[str] = []
    with pytest.raises(RuntimeError):
        async with db.update() as tx:
            await ensure(tx, "gone")
            tx.on_commit(lambda: called.append("no"))
            raise RuntimeError("x")
    assert called == []
    assert await SqlNamespaceStore(db).list() == []

    async with db.update() as tx:
        await ensure(tx, "kept")
        # a nested call joins the same transaction and sees the uncommitted row
        async with db.update() as inner:
            assert inner is tx
            assert await inner.fetchone("SELECT 1 FROM namespaces WHERE name='kept'")
        tx.on_commit(lambda: called.append("yes"))
        assert called == []
    assert called == ["yes"]


async def test_views_do_not_see_uncommitted_writes(db: Database) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def writer() -> None:
        async with db.update() as tx:
            await ensure(tx, "pending")
            started.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await started.wait()
    assert await SqlNamespaceStore(db).list() == []
    release.set()
    await task
    assert await SqlNamespaceStore(db).list() == ["pending"]


async def test_cancelled_writer_rolls_back_and_releases(db: Database) -> None:
    started = asyncio.Event()

    async def writer() -> None:
        async with db.update() as tx:
            await ensure(tx, "cancelled")
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(writer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await SqlNamespaceStore(db).create("after")
    assert await SqlNamespaceStore(db).list() == ["after"]


async def test_namespace_store(db: Database) -> None:
    store = SqlNamespaceStore(db)
    await store.create("a", {"x": "1"})
    with pytest.raises(AlreadyExistsError):
        await store.create("a")
    with pytest.raises(InvalidArgumentError):
        await store.create("bad name")
    await store.set_label("a", "y", "2")
    await store.set_label("a", "x", "")
    assert await store.labels("a") == {"y": "2"}
    with pytest.raises(NotFoundError):
        await store.labels("b")
    with pytest.raises(NotFoundError):
        await store.delete("b")

    async with db.update() as tx:
        await tx.execute(
            "INSERT INTO images (namespace, name, target_media_type, target_digest, target_size,"
            " created_at, updated_at) VALUES ('a', 'img', 'm', 'sha256:00', 1, 0, 0)"
        )
        await tx.execute(
            "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, created_at, updated_at)"
            " VALUES ('a', 'overlayfs', 'k', 'a/1/k', 0, 0)"
        )
    with pytest.raises(FailedPreconditionError, match="images, snapshots on 'overlayfs' snapshotter"):
        await store.delete("a")
    async with db.update() as tx:
        await tx.execute("DELETE FROM images")
        await tx.execute("DELETE FROM snapshots")
    await store.delete("a")
    assert await store.list() == []
