"""A writer cancelled while its BEGIN is in flight must not leave the connection inside a
transaction for the next writer (seen when a pull's task group cancelled an unpack)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from arun.metadata.db import Database


async def test_cancel_during_begin_leaves_no_open_transaction(tmp_path: Path) -> None:
    db = Database(tmp_path / "meta.db")
    await db.open()
    try:
        entered = 0

        async def writer() -> None:
            nonlocal entered
            async with db.update() as tx:
                entered += 1
                await tx.execute("SELECT 1")

        for delay_steps in range(6):
            for _ in range(20):
                t = asyncio.create_task(writer())
                for _ in range(delay_steps):
                    await asyncio.sleep(0)
                t.cancel()
                try:
                    await t
                except asyncio.CancelledError:
                    pass
                # The next writer must be able to start its own transaction.
                async with db.update() as tx:
                    await tx.execute("SELECT 1")
    finally:
        await db.close()
