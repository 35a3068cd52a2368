"""Images: a name pointing at a target descriptor in the content store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Platform:
    """An OCI platform (``architecture``/``os`` and the optional refinements)."""

    architecture: str
    os: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    platform: Platform | None = None


@dataclass
class Image:
    name: str
    target: Descriptor
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ImageStore(Protocol):
    """Images of the current namespace."""

    async def get(self, name: str) -> Image: ...

    async def list(self, *filters: str) -> list[Image]: ...

    async def create(self, image: Image) -> Image: ...

    async def update(self, image: Image, *fieldpaths: str) -> Image:
        """Field paths: ``labels``, ``labels.<k>``, ``target``, ``annotations``,
        ``annotations.<k>``; with none, the whole record is replaced."""
        ...

    async def delete(self, name: str, *, target: Descriptor | None = None) -> None:
        """Delete ``name``; with ``target``, only if the image still points at that digest."""
        ...
