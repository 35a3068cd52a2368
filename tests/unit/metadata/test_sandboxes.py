"""The sandbox store of the metadata database: CRUD, field paths, filters, namespaces, bad input."""

from __future__ import annotations

import pytest

from arun import namespaces
from arun.core import typeurl
from arun.core.containers import RuntimeInfo
from arun.core.sandbox import Sandbox
from arun.errdefs import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from arun.metadata.db import Database
from arun.metadata.sandboxes import SqlSandboxStore

SPEC = typeurl.Any("types.containerd.io/opencontainers/runtime-spec/1/Spec", b'{"ociVersion":"1.1.0"}')


def sandbox(id: str, **kw: object) -> Sandbox:
    s = Sandbox(id=id, runtime=RuntimeInfo("io.containerd.runc.v2"), spec=SPEC, sandboxer="podsandbox")
    for k, v in kw.items():
        setattr(s, k, v)
    return s


@pytest.fixture
def store(db: Database) -> SqlSandboxStore:
    return SqlSandboxStore(db)


async def test_create_get_list_delete(store: SqlSandboxStore, ns: str) -> None:
    ext = {"e": typeurl.Any("x/y", b"\x01")}
    created = await store.create(sandbox("s1", labels={"app": "web"}, extensions=ext))
    assert created.created_at is not None and created.created_at == created.updated_at
    got = await store.get("s1")
    assert got == created
    assert (got.spec, got.extensions, got.sandboxer, got.labels) == (SPEC, ext, "podsandbox", {"app": "web"})
    await store.create(sandbox("s2", labels={"app": "db"}))
    assert [s.id for s in await store.list()] == ["s1", "s2"]
    assert [s.id for s in await store.list("labels.app==db")] == ["s2"]
    assert [s.id for s in await store.list("id==s1", "labels.app==db")] == ["s1", "s2"]
    with pytest.raises(AlreadyExistsError):
        await store.create(sandbox("s1"))
    await store.delete("s1")
    with pytest.raises(NotFoundError):
        await store.get("s1")
    with pytest.raises(NotFoundError):
        await store.delete("s1")
    assert [s.id for s in await store.list()] == ["s2"]


async def test_update_field_paths(store: SqlSandboxStore, ns: str) -> None:
    await store.create(sandbox("s1", labels={"a": "1", "b": "2"}))
    up = await store.update(sandbox("s1", labels={"a": "9"}), "labels.a")
    assert up.labels == {"a": "9", "b": "2"}
    assert up.updated_at is not None and up.created_at is not None and up.updated_at >= up.created_at
    up = await store.update(sandbox("s1", labels={}), "labels.b")  # absent from the request: removed
    assert up.labels == {"a": "9"}
    new_spec = typeurl.Any(SPEC.type_url, b'{"ociVersion":"1.2.0"}')
    up = await store.update(sandbox("s1", spec=new_spec, labels={"only": "this"}))  # no paths: all of them
    assert (up.spec, up.labels) == (new_spec, {"only": "this"})
    assert await store.get("s1") == up
    with pytest.raises(InvalidArgumentError):
        await store.update(sandbox("s1", runtime=RuntimeInfo("other")))  # the runtime name is immutable
    with pytest.raises(InvalidArgumentError):
        await store.update(sandbox("s1"), "sandboxer")
    with pytest.raises(InvalidArgumentError):
        await store.update(sandbox("s1", labels={"k": "x" * 5000}), "labels")
    with pytest.raises(NotFoundError):
        await store.update(sandbox("nope"), "labels")
    assert await store.get("s1") == up  # the refused updates changed nothing


@pytest.mark.parametrize("bad", ["", "bad id!", "x" * 77, "-lead"])
async def test_invalid_ids(store: SqlSandboxStore, ns: str, bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.create(sandbox(bad))
    assert await store.list() == []


async def test_namespaces(store: SqlSandboxStore) -> None:
    with pytest.raises(FailedPreconditionError):
        await store.create(sandbox("s1"))
    with namespaces.use("one"):
        await store.create(sandbox("s1"))
    with namespaces.use("two"):
        assert await store.list() == []
        with pytest.raises(NotFoundError):
            await store.get("s1")
        await store.create(sandbox("s1", labels={"ns": "two"}))
        await store.delete("s1")
    with namespaces.use("one"):
        assert (await store.get("s1")).labels == {}


async def test_malformed_filter(store: SqlSandboxStore, ns: str) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.list("labels.a==")
