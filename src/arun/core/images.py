"""Images: a name pointing at a target descriptor in the content store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from arun.core.content import Descriptor, Platform

__all__ = ["Descriptor", "Image", "ImageStore", "Platform"]


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
