"""Helpers the metadata stores share: encodings, timestamps, filters, and the
post-commit hooks (events, garbage-collection triggers)."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.protobuf import any_pb2

from arun import filters, namespaces
from arun.core import typeurl

if TYPE_CHECKING:
    from arun.core.events import Publisher
    from arun.metadata.db import Tx

log = logging.getLogger(__name__)

Adaptor = filters.Adaptor
Matcher = Callable[[Adaptor], bool]


def to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def clean_map(m: Mapping[str, str] | None) -> dict[str, str]:
    """A label map as stored: empty values mean "unset" and are dropped (as containerd does)."""
    return {k: v for k, v in (m or {}).items() if v}


def dump_map(m: Mapping[str, str] | None) -> str:
    return json.dumps(clean_map(m), sort_keys=True)


def load_map(s: str | None) -> dict[str, str]:
    if not s:
        return {}
    result: dict[str, str] = json.loads(s)
    return result


def encode_any(v: typeurl.Any | None) -> bytes | None:
    if v is None:
        return None
    data: bytes = any_pb2.Any(type_url=v.type_url, value=v.value).SerializeToString()
    return data


def any_to_pb(v: typeurl.Any | None) -> any_pb2.Any | None:
    return None if v is None else any_pb2.Any(type_url=v.type_url, value=v.value)


def decode_any(b: bytes | None) -> typeurl.Any | None:
    if b is None:
        return None
    a = any_pb2.Any()
    a.ParseFromString(b)
    return typeurl.Any(a.type_url, a.value)


def dump_anys(m: Mapping[str, typeurl.Any] | None) -> str:
    return json.dumps(
        {
            k: {"type_url": v.type_url, "value": base64.b64encode(v.value).decode()}
            for k, v in (m or {}).items()
        },
        sort_keys=True,
    )


def load_anys(s: str | None) -> dict[str, typeurl.Any]:
    if not s:
        return {}
    raw = json.loads(s)
    return {k: typeurl.Any(v["type_url"], base64.b64decode(v["value"])) for k, v in raw.items()}


def check_map(fieldpath: Sequence[str], m: Mapping[str, str]) -> str | None:
    """A label-style lookup: the rest of the field path joined by dots is the key."""
    return m.get(".".join(fieldpath)) if m else None


def nonempty(v: str) -> str | None:
    """containerd's adaptors report an empty string field as absent."""
    return v or None


def compile_filters(fs: Sequence[str]) -> Matcher:
    """Parse containerd filter strings (any of them may match); InvalidArgument if malformed."""
    return filters.parse_all(fs).match


class Hooks:
    """What stores do after a commit: publish events and tell GC about mutations."""

    def __init__(self, publisher: Publisher | None = None) -> None:
        self.publisher = publisher
        self._mutation_callbacks: list[Callable[[bool], None]] = []
        # The backends whose records lost something (or which may hold leftovers of a
        # failed change) since garbage collection last swept them: only these are swept
        # (containerd's dirtyCS / dirtySS). Everything starts dirty, so the first
        # collection after start-up also clears what a crash left behind.
        self.content_dirty = True
        self.dirty_snapshotters: set[str] = set()
        self._snapshot_removed: list[Callable[[str, str, str], None]] = []

    def on_mutation(self, callback: Callable[[bool], None]) -> None:
        """``callback(dirty)`` after every committed change; ``dirty`` if something was deleted."""
        self._mutation_callbacks.append(callback)

    def publish(self, tx: Tx, namespace: str, topic: str, event: object) -> None:
        """Publish ``event`` once ``tx`` has committed."""
        publisher = self.publisher
        if publisher is None:
            return

        async def send() -> None:
            with namespaces.use(namespace):
                await publisher.publish(topic, event)

        tx.on_commit(send)

    def on_snapshot_removed(self, callback: Callable[[str, str, str], None]) -> None:
        """``callback(namespace, snapshotter, key)`` whenever a snapshot record goes."""
        self._snapshot_removed.append(callback)

    def snapshot_removed(self, tx: Tx, namespace: str, snapshotter: str, key: str) -> None:
        """A snapshot record is being removed in ``tx``: tell the listeners now and again right
        after the commit (before any other callback of ``tx`` registered later), so that what
        they keep about it is gone before and after the removal, whatever ran in between."""
        if not self._snapshot_removed:
            return

        def notify() -> None:
            for cb in self._snapshot_removed:
                cb(namespace, snapshotter, key)

        notify()
        tx.on_commit(notify)

    def backend_dirty(self, *, content: bool = False, snapshotter: str | None = None) -> None:
        """Have the next collection sweep the content store and/or backend ``snapshotter``."""
        if content:
            self.content_dirty = True
        if snapshotter is not None:
            self.dirty_snapshotters.add(snapshotter)

    def backend_dirty_on_commit(
        self, tx: Tx, *, content: bool = False, snapshotter: str | None = None
    ) -> None:
        """``backend_dirty`` once ``tx`` has committed (a sweep that started before the commit
        still saw the record, so the flag must outlive it)."""
        tx.on_commit(lambda: self.backend_dirty(content=content, snapshotter=snapshotter))

    def take_dirty(self) -> tuple[bool, set[str]]:
        """The dirty flags, cleared: what the caller is about to sweep."""
        content, snapshotters = self.content_dirty, self.dirty_snapshotters
        self.content_dirty = False
        self.dirty_snapshotters = set()
        return content, snapshotters

    def mutated(self, tx: Tx, *, dirty: bool = False) -> None:
        """Record a change; ``dirty`` when it removed a reference (content may now be garbage)."""

        def notify() -> None:
            for cb in self._mutation_callbacks:
                cb(dirty)

        tx.on_commit(notify)


async def next_sequence(tx: Tx, name: str) -> int:
    """The next value of the counter ``name`` (1, 2, …), inside ``tx``."""
    # One statement (one call into the database's worker): the upsert returns the new value.
    row = await tx.fetchone(
        "INSERT INTO sequences (name, value) VALUES (?, 1) "
        "ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
        (name,),
    )
    assert row is not None
    return int(row["value"])


def duplicate_key(e: sqlite3.IntegrityError) -> bool:
    """Whether an INSERT failed because a row with its primary key exists (and not on another
    constraint): a store that inserts without looking first reports AlreadyExists then."""
    return getattr(e, "sqlite_errorname", "") == "SQLITE_CONSTRAINT_PRIMARYKEY"


def backend_key(namespace: str, seq: int, key: str) -> str:
    """A backend key unique across namespaces (containerd's ``createKey``)."""
    return f"{namespace}/{seq}/{key}"
