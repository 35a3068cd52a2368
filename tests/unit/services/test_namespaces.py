from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from arun import namespaces
from arun.errdefs import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from arun.metadata.db import Database
from arun.services.namespaces.local import NamespacesLocal


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[tuple[str, str | None, Any]] = []
        self.fail = fail

    async def publish(self, topic: str, event: Any) -> None:
        if self.fail:
            raise RuntimeError("exchange down")
        self.events.append((topic, namespaces.current(), event))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    d = Database(tmp_path / "meta.db")
    await d.open()
    yield d
    await d.close()


async def test_create_get_list_with_events(db: Database) -> None:
    rec = Recorder()
    local = NamespacesLocal(db, rec)
    with namespaces.use("default"):
        await local.create("a", {"x": "1"})
    await local.create("b", {})
    assert (await local.get("a")).labels == {"x": "1"}
    assert [n.name for n in await local.list()] == ["a", "b"]
    assert [n.name for n in await local.list(["labels.x==1"])] == ["a"]
    assert [n.name for n in await local.list(["name~=b"])] == ["b"]
    topics = [(t, ns, e.name, dict(getattr(e, "labels", {}))) for t, ns, e in rec.events]
    # Published in the request's namespace when there is one, else in the namespace itself.
    assert topics == [
        ("/namespaces/create", "default", "a", {"x": "1"}),
        ("/namespaces/create", "b", "b", {}),
    ]


async def test_update_by_field_paths(db: Database) -> None:
    rec = Recorder()
    local = NamespacesLocal(db, rec)
    await local.create("a", {"keep": "k", "drop": "d", "change": "c"})
    got = await local.update(
        "a", {"change": "C", "new": "n", "ignored": "i"}, ["labels.change", "labels.new", "labels.drop"]
    )
    assert dict(got.labels) == {"keep": "k", "change": "C", "new": "n"}
    got = await local.update("a", {"only": "1"}, [])  # no paths: replace every label
    assert dict(got.labels) == {"only": "1"}
    got = await local.update("a", {"two": "2"}, ["labels"])
    assert dict(got.labels) == {"two": "2"}
    assert [t for t, _, _ in rec.events][-3:] == ["/namespaces/update"] * 3
    assert dict(rec.events[-1][2].labels) == {"two": "2"}


@pytest.mark.parametrize("path", ["name", "labels.", "", "label.x"])
async def test_update_rejects_other_fields(db: Database, path: str) -> None:
    local = NamespacesLocal(db, None)
    await local.create("a", {"x": "1"})
    with pytest.raises(InvalidArgumentError, match="cannot update"):
        await local.update("a", {"x": "2"}, [path])
    assert dict((await local.get("a")).labels) == {"x": "1"}


async def test_failures_change_nothing_and_publish_nothing(db: Database) -> None:
    rec = Recorder()
    local = NamespacesLocal(db, rec)
    with pytest.raises(InvalidArgumentError):
        await local.create("bad..name", {})
    with pytest.raises(InvalidArgumentError):
        await local.create("ok", {"": "empty key"})
    with pytest.raises(NotFoundError):
        await local.update("missing", {"a": "b"}, ["labels.a"])
    await local.create("ok", {})
    with pytest.raises(AlreadyExistsError):
        await local.create("ok", {})
    with pytest.raises(InvalidArgumentError):
        await local.update("ok", {"a": "x" * 5000}, ["labels.a"])
    assert dict((await local.get("ok")).labels) == {}
    async with db.update() as tx:
        await tx.execute(
            "INSERT INTO images (namespace, name, target_media_type, target_digest, target_size, created_at,"
            " updated_at) VALUES ('ok', 'busybox', 'm', 'sha256:x', 1, 0, 0)"
        )
    with pytest.raises(FailedPreconditionError, match="images"):
        await local.delete("ok")
    assert [t for t, _, _ in rec.events] == ["/namespaces/create"]


async def test_delete_publishes_in_the_deleted_namespace(db: Database) -> None:
    rec = Recorder()
    local = NamespacesLocal(db, rec)
    await local.create("gone", {})
    with namespaces.use("default"):
        await local.delete("gone")
    assert rec.events[-1][:2] == ("/namespaces/delete", "gone")
    with pytest.raises(NotFoundError):
        await local.get("gone")


async def test_a_failing_exchange_does_not_fail_the_committed_change(db: Database) -> None:
    local = NamespacesLocal(db, Recorder(fail=True))
    await local.create("a", {})
    assert (await local.get("a")).name == "a"
