"""Progress of a pull or push: events per blob, and two ways to consume them.

A pull reports ``Progress`` events through a plain callback (``on_progress``). Each event
names a blob (``digest``, ``kind``: index, manifest, config, layer) and its ``phase``:

* ``resolving``/``resolved`` — the reference (no digest until resolved);
* ``exists`` — already in the content store (or unpacked), nothing to download;
* ``waiting`` — queued behind ``max_concurrent_downloads``;
* ``downloading`` — ``offset`` of ``total`` bytes so far (one event per chunk);
* ``downloaded`` — committed to the content store, digest verified;
* ``unpacking``/``unpacked`` — a layer applied to its snapshot;
* ``done`` — the image record is written (``digest`` is the image's target);
* ``failed`` — ``error`` says why.

``ProgressQueue`` turns the callback into an async iterator for a consumer in another
task (the CLI's progress bars, the transfer service's progress stream); ``Tracker``
aggregates the events into per-blob state and totals.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

__all__ = ["Phase", "Progress", "ProgressCallback", "ProgressQueue", "Tracker"]


class Phase(enum.StrEnum):
    RESOLVING = "resolving"
    RESOLVED = "resolved"
    EXISTS = "exists"
    WAITING = "waiting"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    MOUNTED = "mounted"
    UNPACKING = "unpacking"
    UNPACKED = "unpacked"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Progress:
    ref: str
    phase: Phase
    digest: str = ""
    kind: str = ""
    media_type: str = ""
    offset: int = 0
    total: int = 0
    error: str = ""
    time: float = field(default_factory=time.monotonic)


ProgressCallback = Callable[[Progress], None]


class ProgressQueue:
    """``async for ev in q`` until the producer calls ``close()``. Unbounded, so the
    producer never blocks on a slow consumer; ``coalesce`` drops intermediate
    ``downloading`` events of a blob when the consumer is behind."""

    def __init__(self, *, coalesce: bool = True) -> None:
        self._q: asyncio.Queue[Progress | None] = asyncio.Queue()
        self._coalesce = coalesce
        self._pending: dict[str, Progress] = {}

    def __call__(self, ev: Progress) -> None:
        if self._coalesce and ev.phase in (Phase.DOWNLOADING, Phase.UPLOADING) and ev.digest in self._pending:
            self._pending[ev.digest] = ev
            return
        if self._coalesce and ev.phase in (Phase.DOWNLOADING, Phase.UPLOADING):
            self._pending[ev.digest] = ev
        self._q.put_nowait(ev)

    def close(self) -> None:
        self._q.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Progress]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Progress]:
        while True:
            ev = await self._q.get()
            if ev is None:
                return
            if ev.phase in (Phase.DOWNLOADING, Phase.UPLOADING) and self._coalesce:
                ev = self._pending.pop(ev.digest, ev)
            yield ev


@dataclass
class BlobState:
    digest: str
    kind: str
    phase: Phase
    offset: int = 0
    total: int = 0


class Tracker:
    """Per-blob state of a transfer, built from its events."""

    def __init__(self) -> None:
        self.blobs: dict[str, BlobState] = {}
        self.events: list[Progress] = []
        self.downloaded_bytes = 0

    def __call__(self, ev: Progress) -> None:
        self.events.append(ev)
        if not ev.digest:
            return
        st = self.blobs.get(ev.digest)
        if st is None:
            st = self.blobs[ev.digest] = BlobState(ev.digest, ev.kind, ev.phase, ev.offset, ev.total)
        if ev.phase in (Phase.DOWNLOADING, Phase.DOWNLOADED):
            self.downloaded_bytes += max(0, ev.offset - st.offset)
        st.phase, st.offset, st.total = ev.phase, max(st.offset, ev.offset), ev.total or st.total

    def phases(self, phase: Phase) -> list[str]:
        """Digests that went through ``phase``."""
        return sorted({e.digest for e in self.events if e.phase == phase and e.digest})
