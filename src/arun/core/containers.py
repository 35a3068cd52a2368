"""Containers: the metadata record of a container (not its running task)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from arun.core import typeurl


@dataclass
class RuntimeInfo:
    name: str = ""
    options: typeurl.Any | None = None


@dataclass
class Container:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    image: str = ""
    runtime: RuntimeInfo = field(default_factory=RuntimeInfo)
    spec: typeurl.Any | None = None
    snapshotter: str = ""
    snapshot_key: str = ""
    sandbox_id: str = ""
    extensions: dict[str, typeurl.Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ContainerStore(Protocol):
    """Containers of the current namespace (``arun.namespaces``)."""

    async def get(self, id: str) -> Container: ...

    async def list(self, *filters: str) -> list[Container]:
        """Containers matching any of ``filters`` (containerd's filter syntax); all if none."""
        ...

    async def create(self, container: Container) -> Container: ...

    async def update(self, container: Container, *fieldpaths: str) -> Container:
        """Replace the fields named by ``fieldpaths`` (``labels``, ``labels.<k>``, ``spec``,
        ``image``, ``snapshotkey``, ``extensions``, ``extensions.<k>``); with none, replace
        labels, spec, extensions, image and snapshot key."""
        ...

    async def delete(self, id: str) -> None: ...
