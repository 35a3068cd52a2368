"""The snapshotter metastore on its own."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from arun.core.snapshots import Info, Kind, Usage
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from arun.snapshots.storage import MetaStore, Transaction


async def test_parent_chain_and_commit(tmp_path: Path) -> None:
    ms = MetaStore(str(tmp_path / "m.db"))
    try:
        s1 = await ms.update(lambda tx: tx.create_snapshot(Kind.ACTIVE, "a1"))
        assert (s1.id, s1.parent_ids) == ("1", ())
        await ms.update(lambda tx: tx.commit_active("a1", "c1", Usage(3, 4096), {"x": "1"}))
        s2 = await ms.update(lambda tx: tx.create_snapshot(Kind.ACTIVE, "a2", "c1"))
        await ms.update(lambda tx: tx.commit_active("a2", "c2", Usage()))
        s3 = await ms.update(lambda tx: tx.create_snapshot(Kind.VIEW, "v3", "c2"))
        assert s3.parent_ids == (s2.id, s1.id)
        sid, info, usage = await ms.view(lambda tx: tx.get_info("c1"))
        assert (sid, info.kind, info.labels, usage) == ("1", Kind.COMMITTED, {"x": "1"}, Usage(3, 4096))
        assert (await ms.view(lambda tx: tx.get_snapshot("v3"))).parent_ids == ("2", "1")
        with pytest.raises(FailedPreconditionError):
            await ms.view(lambda tx: tx.get_snapshot("c1"))
        assert await ms.view(lambda tx: tx.id_map()) == {"1": "c1", "2": "c2", "3": "v3"}
    finally:
        await ms.close()


async def test_errors_roll_back(tmp_path: Path) -> None:
    ms = MetaStore(str(tmp_path / "m.db"))
    try:

        def two(tx: Transaction) -> None:
            tx.create_snapshot(Kind.ACTIVE, "first")
            tx.create_snapshot(Kind.ACTIVE, "first")  # AlreadyExists: the whole step rolls back

        with pytest.raises(AlreadyExistsError):
            await ms.update(two)
        assert await ms.view(lambda tx: tx.walk_info()) == []
        with pytest.raises(InvalidArgumentError):
            await ms.update(lambda tx: tx.create_snapshot(Kind.COMMITTED, "k"))
        with pytest.raises(FailedPreconditionError):
            await ms.view(lambda tx: tx.create_snapshot(Kind.ACTIVE, "ro"))
        with pytest.raises(NotFoundError):
            await ms.update(lambda tx: tx.update_info(Info("nope", Kind.ACTIVE)))
    finally:
        await ms.close()


async def test_ids_are_never_reused(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    ms = MetaStore(path)
    await ms.update(lambda tx: tx.create_snapshot(Kind.ACTIVE, "a"))
    await ms.update(lambda tx: tx.create_snapshot(Kind.ACTIVE, "b"))
    await ms.update(lambda tx: tx.remove("b"))
    await ms.close()
    ms = MetaStore(path)
    try:
        s = await ms.update(lambda tx: tx.create_snapshot(Kind.ACTIVE, "c"))
        assert s.id == "3"
    finally:
        await ms.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    ms = MetaStore(path)
    await ms.open()
    await ms.close()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE meta SET value = '99' WHERE name = 'version'")
    ms = MetaStore(path)
    with pytest.raises(FailedPreconditionError):
        await ms.open()
    await ms.close()


async def test_cancelled_caller_does_not_interrupt_a_step(tmp_path: Path) -> None:
    ms = MetaStore(str(tmp_path / "m.db"))
    try:
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        def slow(tx: Transaction) -> None:
            loop.call_soon_threadsafe(started.set)
            import time

            time.sleep(0.2)
            tx.create_snapshot(Kind.ACTIVE, "slow")

        task = asyncio.create_task(ms.update(slow))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The step finished and committed; the next one sees it.
        assert [i.name for i in await ms.view(lambda tx: tx.walk_info())] == ["slow"]
    finally:
        await ms.close()


async def test_closed_store_refuses(tmp_path: Path) -> None:
    ms = MetaStore(str(tmp_path / "m.db"))
    await ms.close()
    with pytest.raises(FailedPreconditionError):
        await ms.view(lambda tx: tx.walk_info())
