"""Sandboxes: the metadata record of a pod sandbox (containerd's sandbox store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from arun.core import typeurl
from arun.core.containers import RuntimeInfo


@dataclass
class Sandbox:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    runtime: RuntimeInfo = field(default_factory=RuntimeInfo)
    spec: typeurl.Any | None = None
    sandboxer: str = ""
    extensions: dict[str, typeurl.Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class SandboxStore(Protocol):
    """Sandboxes of the current namespace."""

    async def create(self, sandbox: Sandbox) -> Sandbox: ...

    async def update(self, sandbox: Sandbox, *fieldpaths: str) -> Sandbox:
        """Field paths: ``labels``, ``labels.<k>``, ``extensions``, ``extensions.<k>``,
        ``runtime``, ``spec``; with none, all of these (the runtime name must not change)."""
        ...

    async def get(self, id: str) -> Sandbox: ...

    async def list(self, *filters: str) -> list[Sandbox]: ...

    async def delete(self, id: str) -> None: ...
