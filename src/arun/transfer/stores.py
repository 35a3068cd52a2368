"""What a pull or push needs from the daemon's stores, as narrow protocols.

They are subsets of the core interfaces (``arun.core.content.ContentStore``,
``arun.core.snapshots.Snapshotter``, ``arun.core.diff.Applier``, the image store and
lease manager of ``arun.core``), so the namespaced metadata stores satisfy them as they
are, and tests can pass small fakes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Stores"]


class ContentInfo(Protocol):
    digest: str
    size: int
    labels: dict[str, str]


class ContentWriter(Protocol):
    async def write(self, data: bytes) -> int: ...
    def digest(self) -> str: ...
    async def commit(
        self, size: int, expected: str = "", *, labels: Mapping[str, str] | None = None
    ) -> None: ...
    async def status(self) -> Any: ...
    async def truncate(self, size: int) -> None: ...
    async def close(self) -> None: ...


class ContentReader(Protocol):
    @property
    def size(self) -> int: ...
    async def read_at(self, offset: int, n: int) -> bytes: ...
    async def close(self) -> None: ...


class Content(Protocol):
    async def info(self, digest: str) -> Any: ...
    async def update(self, info: Any, fieldpaths: Sequence[str] = ()) -> Any: ...
    async def reader_at(self, desc: Any) -> ContentReader: ...
    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> ContentWriter: ...
    async def abort(self, ref: str) -> None: ...


class Snapshots(Protocol):
    async def stat(self, key: str) -> Any: ...
    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Any]: ...
    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None: ...
    async def remove(self, key: str) -> None: ...


class Applier(Protocol):
    async def apply(self, desc: Any, mounts: Sequence[Any]) -> Any: ...


class Images(Protocol):
    async def get(self, name: str) -> Any: ...
    async def create(self, image: Any) -> Any: ...
    async def update(self, image: Any, *fieldpaths: str) -> Any: ...


class Leases(Protocol):
    async def create(self, id: str, labels: dict[str, str] | None = None, /) -> Any: ...
    async def delete(self, id: str, *, sync: bool = False) -> None: ...


@contextlib.contextmanager
def _no_lease(lease: str | None) -> Iterator[str | None]:
    yield lease


@dataclass
class Stores:
    """The stores of one namespace (the caller has entered it).

    ``lease_context(id)`` makes ``id`` the current lease for the block, so every blob,
    ingest and snapshot the pull creates is held by it (``arun.leasectx.use``).
    ``make_image(name, target, labels)`` builds an image record for ``images``.
    """

    content: Content
    images: Images
    make_image: Callable[[str, Any, dict[str, str]], Any]
    leases: Leases | None = None
    lease_context: Callable[[str | None], contextlib.AbstractContextManager[str | None]] = _no_lease
    snapshotter: Snapshots | None = None
    snapshotter_name: str = "overlayfs"
    applier: Applier | None = None
    # Extra labels the image record gets (CRI: io.cri-containerd.image=managed).
    image_labels: dict[str, str] = field(default_factory=dict)
