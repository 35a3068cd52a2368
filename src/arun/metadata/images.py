"""Images in the metadata database (containerd ``metadata/images.go`` semantics)."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Sequence

from arun import labels, namespaces
from arun.api.containerd.events import image_pb2
from arun.core.content import validate_digest
from arun.core.images import Descriptor, Image
from arun.core.leases import LABEL_EXPIRE
from arun.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError
from arun.metadata import leases
from arun.metadata.common import (
    Adaptor,
    Hooks,
    check_map,
    clean_map,
    compile_filters,
    dump_map,
    load_map,
    nonempty,
    to_datetime,
)
from arun.metadata.db import Database, Tx
from arun.metadata.namespaces import ensure

_COLUMNS = (
    "name, labels, target_media_type, target_digest, target_size, target_annotations, created_at, updated_at"
)


def _read(row: sqlite3.Row) -> Image:
    # As in containerd, a target is stored as media type, digest, size and annotations
    # (urls and platform are not part of an image record).
    return Image(
        name=row["name"],
        labels=load_map(row["labels"]),
        target=Descriptor(
            media_type=row["target_media_type"],
            digest=row["target_digest"],
            size=row["target_size"],
            annotations=load_map(row["target_annotations"]),
        ),
        created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
    )


def adapt(img: Image) -> Adaptor:
    def field(path: Sequence[str]) -> str | None:
        if not path:
            return None
        match path[0]:
            case "name":
                return nonempty(img.name)
            case "target":
                if len(path) < 2:
                    return None
                if path[1] == "digest":
                    return nonempty(img.target.digest)
                if path[1] == "mediatype":
                    return nonempty(img.target.media_type)
            case "labels":
                return check_map(path[1:], img.labels)
            case "annotations":
                return check_map(path[1:], img.target.annotations)
        return None

    return field


def validate(img: Image) -> None:
    if not img.name:
        raise InvalidArgumentError("image name must not be empty")
    for k, v in img.labels.items():
        labels.validate(k, v)
    t = img.target
    try:
        validate_digest(t.digest)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"target.Digest {t.digest!r} invalid: {e}") from e
    if t.size <= 0:
        raise InvalidArgumentError("target.Size must be greater than zero")
    if not t.media_type:
        raise InvalidArgumentError("target.MediaType must be set")


class SqlImageStore:
    def __init__(self, db: Database, hooks: Hooks | None = None) -> None:
        self.db = db
        self.hooks = hooks or Hooks()

    async def _get(self, tx: Tx, ns: str, name: str) -> Image | None:
        row = await tx.fetchone(f"SELECT {_COLUMNS} FROM images WHERE namespace = ? AND name = ?", (ns, name))
        return None if row is None else _read(row)

    async def get(self, name: str) -> Image:
        ns = namespaces.required()
        row = await self.db.lookup(
            f"SELECT {_COLUMNS} FROM images WHERE namespace = ? AND name = ?", (ns, name)
        )
        img = None if row is None else _read(row)
        if img is None:
            raise NotFoundError(f"image {name!r}: not found")
        return img

    async def list(self, *filters: str) -> list[Image]:
        ns = namespaces.required()
        match = compile_filters(filters)
        async with self.db.view() as tx:
            rows = await tx.fetchall(
                f"SELECT {_COLUMNS} FROM images WHERE namespace = ? ORDER BY name", (ns,)
            )
        return [img for img in map(_read, rows) if match(adapt(img))]

    async def _lease(self, tx: Tx, ns: str, img: Image) -> None:
        # An image joins the current lease only when it carries an expiry (containerd's addImageLease).
        if LABEL_EXPIRE in img.labels:
            await leases.attach(tx, ns, leases.IMAGES, img.name)

    async def create(self, image: Image) -> Image:
        ns = namespaces.required()
        validate(image)
        async with self.db.update() as tx:
            await ensure(tx, ns)
            await self._lease(tx, ns, image)
            if await self._get(tx, ns, image.name) is not None:
                raise AlreadyExistsError(f"image {image.name!r}: already exists")
            now = time.time_ns()
            await tx.execute(
                f"INSERT INTO images (namespace, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ns, *_values(image), now, now),
            )
            created = await self._get(tx, ns, image.name)
            assert created is not None
            self.hooks.publish(
                tx, ns, "/images/create", image_pb2.ImageCreate(name=created.name, labels=created.labels)
            )
            self.hooks.mutated(tx)
        return created

    async def update(self, image: Image, *fieldpaths: str) -> Image:
        ns = namespaces.required()
        if not image.name:
            raise InvalidArgumentError("image name is required for update")
        async with self.db.update() as tx:
            current = await self._get(tx, ns, image.name)
            if current is None:
                raise NotFoundError(f"image {image.name!r}: not found")
            created_at = current.created_at
            if fieldpaths:
                new_labels = dict(current.labels)
                target = current.target
                annotations = dict(target.annotations)
                for path in fieldpaths:
                    if path.startswith("labels."):
                        key = path.removeprefix("labels.")
                        new_labels[key] = image.labels.get(key, "")
                    elif path.startswith("annotations."):
                        key = path.removeprefix("annotations.")
                        annotations[key] = image.target.annotations.get(key, "")
                    elif path == "labels":
                        new_labels = dict(image.labels)
                    elif path == "target":
                        target = image.target
                        annotations = dict(image.target.annotations)
                    elif path == "annotations":
                        annotations = dict(image.target.annotations)
                    else:
                        raise InvalidArgumentError(f"cannot update {path!r} field on image {image.name!r}")
                updated = Image(
                    name=image.name,
                    target=dataclasses.replace(target, annotations=clean_map(annotations)),
                    labels=clean_map(new_labels),
                )
            else:
                updated = Image(
                    name=image.name,
                    target=dataclasses.replace(image.target, annotations=clean_map(image.target.annotations)),
                    labels=clean_map(image.labels),
                )
            validate(updated)
            await self._lease(tx, ns, updated)
            now = time.time_ns()
            await tx.execute(
                "UPDATE images SET labels = ?, target_media_type = ?, target_digest = ?, target_size = ?, "
                "target_annotations = ?, updated_at = ? WHERE namespace = ? AND name = ?",
                (*_values(updated)[1:], now, ns, image.name),
            )
            updated.created_at = created_at
            updated.updated_at = to_datetime(now)
            self.hooks.publish(
                tx, ns, "/images/update", image_pb2.ImageUpdate(name=updated.name, labels=updated.labels)
            )
            self.hooks.mutated(tx)
        return updated

    async def delete(self, name: str, *, target: Descriptor | None = None) -> None:
        ns = namespaces.required()
        async with self.db.update() as tx:
            await leases.detach(tx, ns, leases.IMAGES, name)
            current = await self._get(tx, ns, name)
            if current is None:
                raise NotFoundError(f"image {name!r}: not found")
            if target is not None and target.digest and current.target.digest != target.digest:
                raise NotFoundError(f"image {name!r} has target {current.target.digest}, not {target.digest}")
            await tx.execute("DELETE FROM images WHERE namespace = ? AND name = ?", (ns, name))
            self.hooks.publish(tx, ns, "/images/delete", image_pb2.ImageDelete(name=name))
            self.hooks.mutated(tx, dirty=True)


def _values(img: Image) -> tuple[object, ...]:
    return (
        img.name,
        dump_map(img.labels),
        img.target.media_type,
        img.target.digest,
        img.target.size,
        dump_map(img.target.annotations),
    )
