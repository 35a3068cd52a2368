"""Per-operation cost of the metadata database on uvloop, for A/B between trees:

    PYTHONPATH=/tmp/base/src python tools/metatx/micro_db.py     # A
    PYTHONPATH=src python tools/metatx/micro_db.py               # B

Prints µs per operation (median of 5 rounds): a one-statement view, a store get (content info,
which goes through ``Database.lookup`` where that exists), and a lease create (a small write).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from arun import namespaces
from arun.metadata.db import Database
from arun.metadata.leases import SqlLeaseManager


async def _rate(fn: Callable[[int], Awaitable[object]], n: int) -> float:
    rounds = []
    for r in range(5):
        t0 = time.perf_counter()
        for i in range(n):
            await fn(r * n + i)
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return round(statistics.median(rounds), 1)


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        db = Database(Path(d) / "meta.db")
        await db.open()
        try:
            with namespaces.use("bench"):
                async with db.update() as tx:
                    await tx.execute("INSERT INTO namespaces (name, created_at) VALUES ('bench', 0)")
                    await tx.execute(
                        "INSERT INTO content (namespace, digest, size, labels, created_at, updated_at)"
                        " VALUES ('bench', 'sha256:' || printf('%064d', 0), 1, '{}', 0, 0)"
                    )

                async def view(_: int) -> object:
                    async with db.view() as tx:
                        return await tx.fetchone("SELECT labels FROM namespaces WHERE name = ?", ("bench",))

                from arun.content.local.store import LocalStore
                from arun.metadata.content import SqlContentStore

                store = SqlContentStore(db, LocalStore(Path(d) / "content"))
                digest = "sha256:" + "0" * 64

                async def info(_: int) -> object:
                    return await store.info(digest)

                leases = SqlLeaseManager(db)

                async def lease(i: int) -> object:
                    return await leases.create(f"l{i}")

                for _ in range(200):
                    await view(0)
                out = {
                    "view_1_statement_us": await _rate(view, 1000),
                    "content_info_us": await _rate(info, 1000),
                    "lease_create_us": await _rate(lease, 300),
                }
        finally:
            await db.close()
    print(json.dumps(out))


if __name__ == "__main__":
    uvloop.run(main())
