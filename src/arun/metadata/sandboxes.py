"""Sandboxes in the metadata database (containerd ``metadata/sandbox.go`` semantics)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from arun import identifiers, labels, namespaces
from arun.core.containers import RuntimeInfo
from arun.core.sandbox import Sandbox
from arun.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError
from arun.metadata.common import (
    Adaptor,
    Hooks,
    check_map,
    compile_filters,
    decode_any,
    dump_anys,
    dump_map,
    encode_any,
    load_anys,
    load_map,
    to_datetime,
)
from arun.metadata.db import Database
from arun.metadata.namespaces import ensure

_COLUMNS = "id, labels, runtime_name, runtime_options, spec, sandboxer, extensions, created_at, updated_at"
_FULL_UPDATE = ("labels", "extensions", "spec", "runtime")


def _read(row: sqlite3.Row) -> Sandbox:
    return Sandbox(
        id=row["id"],
        labels=load_map(row["labels"]),
        runtime=RuntimeInfo(row["runtime_name"], decode_any(row["runtime_options"])),
        spec=decode_any(row["spec"]),
        sandboxer=row["sandboxer"],
        extensions=load_anys(row["extensions"]),
        created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
    )


def adapt(s: Sandbox) -> Adaptor:
    def field(path: Sequence[str]) -> str | None:
        if not path:
            return None
        if path[0] == "id":
            return s.id
        if path[0] == "labels":
            return check_map(path[1:], s.labels)
        return None

    return field


def validate(s: Sandbox) -> None:
    try:
        identifiers.validate(s.id)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"invalid sandbox ID: {e}") from e
    labels.validate_all(s.labels)


class SqlSandboxStore:
    def __init__(self, db: Database, hooks: Hooks | None = None) -> None:
        self.db = db
        self.hooks = hooks or Hooks()

    async def create(self, sandbox: Sandbox) -> Sandbox:
        ns = namespaces.required()
        validate(sandbox)
        async with self.db.update() as tx:
            await ensure(tx, ns)
            if await tx.fetchone("SELECT 1 FROM sandboxes WHERE namespace = ? AND id = ?", (ns, sandbox.id)):
                raise AlreadyExistsError(f"sandbox {sandbox.id!r}: already exists")
            now = time.time_ns()
            await tx.execute(
                f"INSERT INTO sandboxes (namespace, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ns,
                    sandbox.id,
                    dump_map(sandbox.labels),
                    sandbox.runtime.name,
                    encode_any(sandbox.runtime.options),
                    encode_any(sandbox.spec),
                    sandbox.sandboxer,
                    dump_anys(sandbox.extensions),
                    now,
                    now,
                ),
            )
            row = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM sandboxes WHERE namespace = ? AND id = ?", (ns, sandbox.id)
            )
            assert row is not None
            self.hooks.mutated(tx)
        return _read(row)

    async def update(self, sandbox: Sandbox, *fieldpaths: str) -> Sandbox:
        ns = namespaces.required()
        async with self.db.update() as tx:
            row = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM sandboxes WHERE namespace = ? AND id = ?", (ns, sandbox.id)
            )
            if row is None:
                raise NotFoundError(f"sandbox {sandbox.id!r}: not found")
            updated = _read(row)
            paths: Sequence[str] = fieldpaths
            if not paths:
                paths = _FULL_UPDATE
                if updated.runtime.name != sandbox.runtime.name:
                    raise InvalidArgumentError("sandbox.Runtime.Name field is immutable")
            for path in paths:
                if path.startswith("labels."):
                    key = path.removeprefix("labels.")
                    updated.labels[key] = sandbox.labels.get(key, "")
                    continue
                if path.startswith("extensions."):
                    key = path.removeprefix("extensions.")
                    ext = sandbox.extensions.get(key)
                    if ext is None:
                        updated.extensions.pop(key, None)
                    else:
                        updated.extensions[key] = ext
                    continue
                match path:
                    case "labels":
                        updated.labels = dict(sandbox.labels)
                    case "extensions":
                        updated.extensions = dict(sandbox.extensions)
                    case "runtime":
                        updated.runtime = sandbox.runtime
                    case "spec":
                        updated.spec = sandbox.spec
                    case _:
                        raise InvalidArgumentError(f"cannot update {path!r} field on sandbox {sandbox.id!r}")
            validate(updated)
            now = time.time_ns()
            await tx.execute(
                "UPDATE sandboxes SET labels = ?, runtime_name = ?, runtime_options = ?, spec = ?, "
                "extensions = ?, updated_at = ? WHERE namespace = ? AND id = ?",
                (
                    dump_map(updated.labels),
                    updated.runtime.name,
                    encode_any(updated.runtime.options),
                    encode_any(updated.spec),
                    dump_anys(updated.extensions),
                    now,
                    ns,
                    sandbox.id,
                ),
            )
            row = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM sandboxes WHERE namespace = ? AND id = ?", (ns, sandbox.id)
            )
            assert row is not None
            self.hooks.mutated(tx)
        return _read(row)

    async def get(self, id: str) -> Sandbox:
        ns = namespaces.required()
        row = await self.db.lookup(
            f"SELECT {_COLUMNS} FROM sandboxes WHERE namespace = ? AND id = ?", (ns, id)
        )
        if row is None:
            raise NotFoundError(f"sandbox {id!r}: not found")
        return _read(row)

    async def list(self, *filters: str) -> list[Sandbox]:
        ns = namespaces.required()
        match = compile_filters(filters)
        async with self.db.view() as tx:
            rows = await tx.fetchall(
                f"SELECT {_COLUMNS} FROM sandboxes WHERE namespace = ? ORDER BY id", (ns,)
            )
        return [s for s in map(_read, rows) if match(adapt(s))]

    async def delete(self, id: str) -> None:
        ns = namespaces.required()
        async with self.db.update() as tx:
            if await tx.execute("DELETE FROM sandboxes WHERE namespace = ? AND id = ?", (ns, id)) == 0:
                raise NotFoundError(f"sandbox {id!r}: not found")
            self.hooks.mutated(tx, dirty=True)
