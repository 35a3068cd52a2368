"""Stores that insert without looking first (containers, leases): the primary key reports an
existing id as AlreadyExists, nothing else is, and a refused create changes nothing."""

from __future__ import annotations

import sqlite3

import pytest

from arun.core import typeurl
from arun.core.containers import Container, RuntimeInfo
from arun.core.leases import Resource
from arun.errdefs import AlreadyExistsError, NotFoundError
from arun.metadata.common import Hooks, duplicate_key
from arun.metadata.containers import SqlContainerStore
from arun.metadata.db import Database
from arun.metadata.leases import SqlLeaseManager
from arun.testing.events import RecordingPublisher

SNAPSHOT_ID = "rootfs"
SPEC = typeurl.Any("types.containerd.io/opencontainers/runtime-spec/1/Spec", b"{}")


def test_duplicate_key_only_for_the_primary_key() -> None:
    c = sqlite3.connect(":memory:")
    c.execute("CREATE TABLE t (a TEXT NOT NULL, b TEXT NOT NULL, u TEXT UNIQUE, PRIMARY KEY (a, b))")
    c.execute("INSERT INTO t VALUES ('1', '2', 'x')")
    errors = []
    for row in (("1", "2", "y"), (None, "3", "z"), ("1", "4", "x")):
        with pytest.raises(sqlite3.IntegrityError) as e:
            c.execute("INSERT INTO t VALUES (?, ?, ?)", row)
        errors.append(duplicate_key(e.value))
    assert errors == [True, False, False]


async def test_duplicate_container_changes_nothing(
    db: Database, ns: str, publisher: RecordingPublisher
) -> None:
    hooks = Hooks(publisher)
    mutations: list[bool] = []
    hooks.on_mutation(mutations.append)
    store = SqlContainerStore(db, hooks)
    first = await store.create(Container("c1", labels={"a": "1"}, runtime=RuntimeInfo("rt"), spec=SPEC))
    assert publisher.topics() == ["/containers/create"]
    with pytest.raises(AlreadyExistsError, match="c1"):
        await store.create(Container("c1", labels={"b": "2"}, runtime=RuntimeInfo("other"), spec=SPEC))
    assert publisher.topics() == ["/containers/create"]
    assert mutations == [False]
    assert await store.get("c1") == first


async def test_created_container_is_what_get_returns(db: Database, ns: str) -> None:
    store = SqlContainerStore(db, Hooks())
    created = await store.create(
        Container(
            "c2",
            labels={"a": "1", "dropped": ""},
            image="img",
            runtime=RuntimeInfo("rt", typeurl.Any("opts/x", b"\x00\x01")),
            spec=SPEC,
            snapshotter="overlayfs",
            snapshot_key="c2",
            sandbox_id="sb",
            extensions={"e": typeurl.Any("ext/y", b"\xff")},
        )
    )
    assert created == await store.get("c2")
    assert created.labels == {"a": "1"}
    assert created.created_at is not None and created.created_at == created.updated_at


async def test_duplicate_lease_changes_nothing(db: Database, ns: str) -> None:
    hooks = Hooks()
    mutations: list[bool] = []
    hooks.on_mutation(mutations.append)
    lm = SqlLeaseManager(db, hooks)
    first = await lm.create("l1", {"x": "1"})
    with pytest.raises(AlreadyExistsError, match="l1"):
        await lm.create("l1", {"x": "2"})
    assert mutations == [False]
    assert await lm.list() == [first]


async def test_lease_delete_reports_missing_and_signals_only_real_deletions(db: Database, ns: str) -> None:
    hooks = Hooks()
    mutations: list[bool] = []
    hooks.on_mutation(mutations.append)
    lm = SqlLeaseManager(db, hooks)
    with pytest.raises(NotFoundError):
        await lm.delete("never")
    assert mutations == []
    await lm.create("l1")
    await lm.add_resource("l1", Resource(SNAPSHOT_ID, "snapshots/overlayfs"))
    await lm.delete("l1")
    assert mutations == [False, False, True]
    assert await lm.list() == []
    async with db.view() as tx:
        assert await tx.fetchall("SELECT * FROM lease_resources") == []
    with pytest.raises(NotFoundError):
        await lm.delete("l1")
    assert mutations == [False, False, True]


async def test_execute_later_reports_rows_changed(db: Database) -> None:
    seen: list[int] = []
    async with db.update() as tx:
        tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('a', 1)", (), seen.append)
        tx.execute_later(
            "INSERT OR IGNORE INTO namespaces (name, created_at) VALUES ('a', 2)", (), seen.append
        )
        # with the next statement
        assert await tx.fetchone("SELECT name FROM namespaces") is not None
        assert seen == [1, 0]
        tx.execute_later("DELETE FROM namespaces WHERE name = ?", ("a",), seen.append)
    # with the COMMIT
    assert seen == [1, 0, 1]
    # a failed call reports nothing
    with pytest.raises(sqlite3.IntegrityError):
        async with db.update() as tx:
            tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('b', 1)", (), seen.append)
            tx.execute_later("INSERT INTO namespaces (name, created_at) VALUES ('b', 1)", (), seen.append)
    assert seen == [1, 0, 1]
