"""Namespaces over the metadata store, publishing ``/namespaces/*`` events after commit."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from arun import filters, labels, namespaces
from arun.api.containerd.events import namespace_pb2 as events_pb2
from arun.errdefs import InvalidArgumentError
from arun.metadata.db import Database
from arun.metadata.namespaces import SqlNamespaceStore

log = logging.getLogger(__name__)

TOPIC_CREATE = "/namespaces/create"
TOPIC_UPDATE = "/namespaces/update"
TOPIC_DELETE = "/namespaces/delete"


class Publisher(Protocol):
    """The event exchange as this service uses it: the namespace is the current one."""

    async def publish(self, topic: str, event: Any) -> None: ...


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def field(self, path: Iterable[str]) -> str | None:
        return filters.mapping_adaptor({"name": self.name, "labels": dict(self.labels)})(tuple(path))


class NamespacesLocal:
    def __init__(self, db: Database, publisher: Publisher | None) -> None:
        self.db = db
        self.store = SqlNamespaceStore(db)
        self.publisher = publisher

    async def get(self, name: str) -> Namespace:
        return Namespace(name, await self.store.labels(name))

    async def list(self, filter_texts: Iterable[str] = ()) -> list[Namespace]:
        """Namespaces in name order; filters on ``name`` and ``labels.<key>``."""
        f = filters.parse_all(filter_texts)
        found = [Namespace(n, ls) for n, ls in (await self.store.list_with_labels()).items()]
        return [ns for ns in found if f.match(ns.field)]

    async def create(self, name: str, labels_: Mapping[str, str]) -> Namespace:
        created = Namespace(name, dict(labels_))
        async with self.db.update() as tx:
            await self.store.create(name, dict(labels_))
            tx.on_commit(
                lambda: self._publish(
                    name, TOPIC_CREATE, events_pb2.NamespaceCreate(name=name, labels=labels_)
                )
            )
        return created

    async def update(self, name: str, labels_: Mapping[str, str], paths: Iterable[str] = ()) -> Namespace:
        """Change labels: every label (no paths, or ``labels``) or single ones (``labels.<key>``;
        a key missing from ``labels_`` is removed)."""
        paths = list(paths)
        for p in paths:
            if p != "labels" and not (p.startswith("labels.") and len(p) > len("labels.")):
                raise InvalidArgumentError(f"cannot update {p!r} field on namespace {name!r}")
        async with self.db.update() as tx:
            if not paths or "labels" in paths:
                await self.store.replace_labels(name, dict(labels_))
            else:
                current = await self.store.labels(name)  # NotFound before any change
                for p in paths:
                    key = p.removeprefix("labels.")
                    value = labels_.get(key, "")
                    labels.validate(key, value)
                    if value:
                        current[key] = value
                    else:
                        current.pop(key, None)
                await self.store.replace_labels(name, current)
            updated = Namespace(name, await self.store.labels(name))
            tx.on_commit(
                lambda: self._publish(
                    name, TOPIC_UPDATE, events_pb2.NamespaceUpdate(name=name, labels=dict(updated.labels))
                )
            )
        return updated

    async def delete(self, name: str) -> None:
        async with self.db.update() as tx:
            await self.store.delete(name)
            # containerd publishes the delete event in the deleted namespace.
            tx.on_commit(
                lambda: self._publish(name, TOPIC_DELETE, events_pb2.NamespaceDelete(name=name), own=True)
            )

    async def _publish(self, name: str, topic: str, event: Any, own: bool = False) -> None:
        if self.publisher is None:
            return
        ns = name if own else (namespaces.current() or name)
        try:
            with namespaces.use(ns):
                await self.publisher.publish(topic, event)
        except Exception:
            # The change is committed; a lost event must not turn it into a failed request.
            log.warning("publishing %s for namespace %r failed", topic, name, exc_info=True)
