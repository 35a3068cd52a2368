"""Leases: named holds on resources that keep them from garbage collection."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# Label on a lease (or image) after which it no longer protects anything (RFC 3339 time).
LABEL_EXPIRE = "containerd.io/gc.expire"
# Label on a lease: hold only the listed resources, not what they reference.
LABEL_FLAT = "containerd.io/gc.flat"


@dataclass
class Lease:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True)
class Resource:
    """A leased resource. ``type`` is ``content``, ``ingests``, ``images`` or
    ``snapshots/<snapshotter>``; ``id`` a digest, an ingest ref, an image name or a key."""

    id: str
    type: str


class LeaseManager(Protocol):
    """Leases of the current namespace."""

    async def create(self, id: str, labels: dict[str, str] | None = None) -> Lease: ...

    async def delete(self, id: str, *, sync: bool = False) -> None:
        """Delete the lease; with ``sync``, run garbage collection before returning."""
        ...

    async def list(self, *filters: str) -> list[Lease]: ...

    async def add_resource(self, lease: str, resource: Resource) -> None: ...

    async def delete_resource(self, lease: str, resource: Resource) -> None: ...

    async def list_resources(self, lease: str) -> builtins.list[Resource]: ...
