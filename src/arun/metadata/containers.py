"""Containers in the metadata database (containerd ``metadata/containers.go`` semantics)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from arun import identifiers, labels, namespaces
from arun.api.containerd.events import container_pb2
from arun.core.containers import Container, RuntimeInfo
from arun.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError
from arun.metadata.common import (
    Adaptor,
    Hooks,
    any_to_pb,
    check_map,
    compile_filters,
    decode_any,
    dump_anys,
    dump_map,
    duplicate_key,
    encode_any,
    load_anys,
    load_map,
    nonempty,
    to_datetime,
)
from arun.metadata.db import Database
from arun.metadata.namespaces import ensure

_COLUMNS = (
    "id, labels, image, runtime_name, runtime_options, spec, snapshotter, snapshot_key, "
    "sandbox_id, extensions, created_at, updated_at"
)
_COLUMN_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))
# Fields a full update (no field paths) replaces; snapshotter and runtime name must not change.
_FULL_UPDATE = ("labels", "spec", "extensions", "image", "snapshotkey")


def _read(row: sqlite3.Row | Mapping[str, Any]) -> Container:
    return Container(
        id=row["id"],
        labels=load_map(row["labels"]),
        image=row["image"],
        runtime=RuntimeInfo(row["runtime_name"], decode_any(row["runtime_options"])),
        spec=decode_any(row["spec"]),
        snapshotter=row["snapshotter"],
        snapshot_key=row["snapshot_key"],
        sandbox_id=row["sandbox_id"],
        extensions=load_anys(row["extensions"]),
        created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
    )


def adapt(c: Container) -> Adaptor:
    def field(path: Sequence[str]) -> str | None:
        if not path:
            return None
        match path[0]:
            case "id":
                return nonempty(c.id)
            case "runtime":
                if len(path) > 1 and path[1] == "name":
                    return nonempty(c.runtime.name)
            case "image":
                return nonempty(c.image)
            case "labels":
                return check_map(path[1:], c.labels)
        return None

    return field


def validate(c: Container) -> None:
    try:
        identifiers.validate(c.id)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"container.ID: {e}") from e
    for k in c.extensions:
        if not k:
            raise InvalidArgumentError("container.Extension keys must not be zero-length")
    for k, v in c.labels.items():
        labels.validate(k, v)
    if not c.runtime.name:
        raise InvalidArgumentError("container.Runtime.Name must be set")
    if c.spec is None:
        raise InvalidArgumentError("container.Spec must be set")
    if c.snapshot_key and not c.snapshotter:
        raise InvalidArgumentError("container.Snapshotter must be set if container.SnapshotKey is set")


class SqlContainerStore:
    def __init__(self, db: Database, hooks: Hooks | None = None) -> None:
        self.db = db
        self.hooks = hooks or Hooks()

    async def get(self, id: str) -> Container:
        ns = namespaces.required()
        row = await self.db.lookup(
            f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? AND id = ?", (ns, id)
        )
        if row is None:
            raise NotFoundError(f"container {id!r} in namespace {ns!r}: not found")
        return _read(row)

    async def list(self, *filters: str) -> list[Container]:
        ns = namespaces.required()
        match = compile_filters(filters)
        async with self.db.view() as tx:
            rows = await tx.fetchall(
                f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? ORDER BY id", (ns,)
            )
        out = []
        for row in rows:
            c = _read(row)
            if match(adapt(c)):
                out.append(c)
        return out

    async def create(self, container: Container) -> Container:
        ns = namespaces.required()
        try:
            validate(container)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"create container failed validation: {e}") from e
        now = time.time_ns()
        values = (*_values(container), now, now)
        # What reading the row back would give (the same decoding of the same values), without
        # the extra statement.
        created = _read(dict(zip(_COLUMN_NAMES, values, strict=True)))
        try:
            async with self.db.update() as tx:
                await ensure(tx, ns)
                # No look first: the primary key refuses an existing id (below). The insert runs
                # with the COMMIT, in one call into the database's worker.
                tx.execute_later(
                    f"INSERT INTO containers (namespace, {_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                    (ns, *values),
                )
                self.hooks.publish(
                    tx,
                    ns,
                    "/containers/create",
                    container_pb2.ContainerCreate(
                        id=created.id,
                        image=created.image,
                        runtime=container_pb2.ContainerCreate.Runtime(
                            name=created.runtime.name,
                            options=any_to_pb(created.runtime.options),
                        ),
                    ),
                )
                self.hooks.mutated(tx)
        except sqlite3.IntegrityError as e:
            if not duplicate_key(e):
                raise
            raise AlreadyExistsError(f"container {container.id!r}: already exists") from None
        return created

    async def update(self, container: Container, *fieldpaths: str) -> Container:
        if not container.id:
            raise InvalidArgumentError("must specify a container id")
        ns = namespaces.required()
        async with self.db.update() as tx:
            row = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? AND id = ?", (ns, container.id)
            )
            if row is None:
                raise NotFoundError(f"container {container.id!r} in namespace {ns!r}: not found")
            updated = _read(row)
            paths: Sequence[str] = fieldpaths
            if not paths:
                paths = _FULL_UPDATE
                if updated.snapshotter != container.snapshotter:
                    raise InvalidArgumentError("container.Snapshotter field is immutable")
                if updated.runtime.name != container.runtime.name:
                    raise InvalidArgumentError("container.Runtime.Name field is immutable")
            for path in paths:
                if path.startswith("labels."):
                    key = path.removeprefix("labels.")
                    _set_or_drop(updated.labels, key, container.labels.get(key))
                    continue
                if path.startswith("extensions."):
                    key = path.removeprefix("extensions.")
                    ext = container.extensions.get(key)
                    if ext is None:
                        updated.extensions.pop(key, None)
                    else:
                        updated.extensions[key] = ext
                    continue
                match path:
                    case "labels":
                        updated.labels = dict(container.labels)
                    case "spec":
                        updated.spec = container.spec
                    case "extensions":
                        updated.extensions = dict(container.extensions)
                    case "image":
                        updated.image = container.image
                    case "snapshotkey":
                        updated.snapshot_key = container.snapshot_key
                    case _:
                        raise InvalidArgumentError(f"cannot update {path!r} field on {container.id!r}")
            try:
                validate(updated)
            except InvalidArgumentError as e:
                raise InvalidArgumentError(f"update failed validation: {e}") from e
            now = time.time_ns()
            await tx.execute(
                "UPDATE containers SET labels = ?, image = ?, spec = ?, snapshot_key = ?, extensions = ?, "
                "updated_at = ? WHERE namespace = ? AND id = ?",
                (
                    dump_map(updated.labels),
                    updated.image,
                    encode_any(updated.spec),
                    updated.snapshot_key,
                    dump_anys(updated.extensions),
                    now,
                    ns,
                    container.id,
                ),
            )
            updated.updated_at = to_datetime(now)
            self.hooks.publish(
                tx,
                ns,
                "/containers/update",
                container_pb2.ContainerUpdate(
                    id=updated.id,
                    image=updated.image,
                    labels=updated.labels,
                    snapshot_key=updated.snapshot_key,
                ),
            )
            # Like containerd, an update is a mutation but not a deletion.
            self.hooks.mutated(tx)
        return updated

    async def delete(self, id: str) -> None:
        ns = namespaces.required()
        async with self.db.update() as tx:
            n = await tx.execute("DELETE FROM containers WHERE namespace = ? AND id = ?", (ns, id))
            if n == 0:
                raise NotFoundError(f"container {id!r} in namespace {ns!r}: not found")
            self.hooks.publish(tx, ns, "/containers/delete", container_pb2.ContainerDelete(id=id))
            self.hooks.mutated(tx, dirty=True)


def _set_or_drop(m: dict[str, str], key: str, value: str | None) -> None:
    # containerd writes the (possibly empty) value; an empty label is dropped on write.
    if value:
        m[key] = value
    else:
        m.pop(key, None)


def _values(c: Container) -> tuple[object, ...]:
    return (
        c.id,
        dump_map(c.labels),
        c.image,
        c.runtime.name,
        encode_any(c.runtime.options),
        encode_any(c.spec),
        c.snapshotter,
        c.snapshot_key,
        c.sandbox_id,
        dump_anys(c.extensions),
    )
