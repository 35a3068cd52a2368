"""Garbage collection of metadata and backend objects (containerd ``metadata/gc.go``,
``pkg/gc`` and the ``gc.scheduler`` plugin).

Mark: the roots are
  * leases that have not expired (``containerd.io/gc.expire``), with every
    resource they hold;
  * images (unless expired by the same label);
  * containers;
  * content and snapshots labelled ``containerd.io/gc.root``;
  * ingests that no lease holds until their expiry (24 hours after they were
    opened);
  * whatever a sandbox's labels refer to.
References: an image refers to its target blob; a container to its snapshot;
a snapshot to its parent; an ingest to the blob it expects; and any object to
what its ``containerd.io/gc.ref.content*``, ``gc.ref.image*`` and
``gc.ref.snapshot.<snapshotter>*`` labels name. ``gc.bref.*`` labels are back
references: the labelled object lives while the named one does. A lease
labelled ``containerd.io/gc.flat`` holds only the objects it lists, not what
they refer to.

Sweep: one write transaction deletes every unmarked record (leases, images,
blobs, ingests, snapshots); then each backend that is dirty drops what no
namespace refers to any more, under that store's exclusive lock so no record is
being written meanwhile. A backend is dirty (``Hooks.backend_dirty``) when a
record of it was removed (by this sweep, Content.Delete, Snapshots.Remove or
Commit, a namespace's ingests with the namespace) or a change failed half-way
and may have left a backend object behind, and at start-up; a collection that
removed nothing of a backend leaves it alone (containerd's ``dirtyCS`` /
``dirtySS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import NamedTuple

from arun.api.containerd.events import image_pb2, snapshot_pb2
from arun.core.leases import LABEL_EXPIRE, LABEL_FLAT
from arun.errdefs import InvalidArgumentError
from arun.metadata.common import Hooks, load_map
from arun.metadata.db import Database, Tx

log = logging.getLogger(__name__)

LABEL_ROOT = "containerd.io/gc.root"
LABEL_REF_CONTENT = "containerd.io/gc.ref.content"
LABEL_REF_IMAGE = "containerd.io/gc.ref.image"
LABEL_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."
LABEL_BREF_CONTENT = "containerd.io/gc.bref.content"
LABEL_BREF_IMAGE = "containerd.io/gc.bref.image"
LABEL_BREF_CONTAINER = "containerd.io/gc.bref.container"
LABEL_BREF_SNAPSHOT = "containerd.io/gc.bref.snapshot."


class Kind(IntEnum):
    CONTENT = 1
    SNAPSHOT = 2
    CONTAINER = 3
    IMAGE = 5
    LEASE = 6
    INGEST = 7


# A node reached through a flat lease: it is kept, but what it refers to is not.
FLAT = 0x20
_KIND_MASK = 0x1F


class Node(NamedTuple):
    # A tuple: hashing and comparing (the mark phase does little else) run in C.
    type: int
    namespace: str
    key: str

    def unflat(self) -> Node:
        if not self.type & FLAT:
            return self
        return Node(self.type & _KIND_MASK, self.namespace, self.key)


def tricolor(roots: Iterable[Node], refs: Callable[[Node], Iterable[Node]]) -> set[Node]:
    """Every node reachable from ``roots`` (flat bits stripped), depth first."""
    gray = list(roots)
    seen = set(gray)
    reachable: set[Node] = set()
    while gray:
        n = gray.pop()
        for r in refs(n):
            if r not in seen:
                seen.add(r)
                gray.append(r)
        reachable.add(n.unflat())
    return reachable


def _suffix_ok(key: str, prefix: str) -> bool:
    # "prefix" itself, or "prefix.<anything>" / "prefix/<anything>"
    return key == prefix or (key.startswith(prefix) and key[len(prefix)] in "./")


def label_refs(namespace: str, labels: Mapping[str, str]) -> list[Node]:
    """Forward references named by ``gc.ref.*`` labels."""
    out: list[Node] = []
    for k, v in labels.items():
        if _suffix_ok(k, LABEL_REF_CONTENT):
            out.append(Node(Kind.CONTENT, namespace, v))
        elif _suffix_ok(k, LABEL_REF_IMAGE):
            out.append(Node(Kind.IMAGE, namespace, v))
        elif k.startswith(LABEL_REF_SNAPSHOT):
            snapshotter = k[len(LABEL_REF_SNAPSHOT) :].split("/", 1)[0]
            if snapshotter:
                out.append(Node(Kind.SNAPSHOT, namespace, f"{snapshotter}/{v}"))
    return out


def label_brefs(namespace: str, labels: Mapping[str, str]) -> list[Node]:
    """Objects named by ``gc.bref.*`` labels: the labelled object lives while they do."""
    out: list[Node] = []
    for k, v in labels.items():
        if _suffix_ok(k, LABEL_BREF_CONTENT):
            out.append(Node(Kind.CONTENT, namespace, v))
        elif _suffix_ok(k, LABEL_BREF_IMAGE):
            out.append(Node(Kind.IMAGE, namespace, v))
        elif _suffix_ok(k, LABEL_BREF_CONTAINER):
            out.append(Node(Kind.CONTAINER, namespace, v))
        elif k.startswith(LABEL_BREF_SNAPSHOT):
            snapshotter = k[len(LABEL_BREF_SNAPSHOT) :].split("/", 1)[0]
            if snapshotter:
                out.append(Node(Kind.SNAPSHOT, namespace, f"{snapshotter}/{v}"))
    return out


# Every label the collector looks at starts with this.
_GC_PREFIX = "containerd.io/gc."


def gc_labels(raw: str | None) -> dict[str, str]:
    """The ``containerd.io/gc.*`` labels of a stored label map (JSON): the only ones that matter
    here. Most objects have none, and then their labels are not even parsed (the prefix is
    plain ASCII, so it appears verbatim in the JSON text of any key that has it)."""
    if not raw or _GC_PREFIX not in raw:
        return {}
    return {k: v for k, v in load_map(raw).items() if k.startswith(_GC_PREFIX)}


def expired(labels: Mapping[str, str], now: datetime) -> bool:
    """Whether ``containerd.io/gc.expire`` is in the past (an unparsable value never expires)."""
    v = labels.get(LABEL_EXPIRE)
    if not v:
        return False
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        log.info("ignoring invalid expiration value %r", v)
        return False
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return now > t


@dataclass
class Stats:
    """What one collection did and how long it took (seconds)."""

    removed: dict[str, int] = field(default_factory=dict)
    blobs_removed: int = 0
    ingests_aborted: int = 0
    snapshots_removed: dict[str, int] = field(default_factory=dict)
    meta_seconds: float = 0.0
    elapsed: float = 0.0


class _Graph:
    """The whole database as nodes, labels and edges, loaded inside one transaction."""

    def __init__(self) -> None:
        self.labels: dict[Node, dict[str, str]] = {}
        self.edges: dict[Node, list[Node]] = {}
        self.backrefs: dict[Node, list[Node]] = {}
        self.roots: list[Node] = []
        self.all: list[Node] = []

    def refs(self, n: Node) -> list[Node]:
        base = n.unflat()
        out = list(self.backrefs.get(base, ()))
        if n.type & FLAT:
            # Only structural references, themselves flat (an image's target, a snapshot's parent).
            out.extend(Node(e.type | FLAT, e.namespace, e.key) for e in self.edges.get(base, ()))
            return out
        out.extend(self.edges.get(base, ()))
        labels = self.labels.get(base)
        if labels:
            out.extend(label_refs(n.namespace, labels))
        return out


async def _load(tx: Tx, now: datetime) -> _Graph:
    g = _Graph()
    now_ns = int(now.timestamp() * 1e9)

    def add_brefs(owner: Node, labels: Mapping[str, str]) -> None:
        if not labels:
            return
        for target in label_brefs(owner.namespace, labels):
            g.backrefs.setdefault(target, []).append(owner)

    # Leases and what they hold.
    leases = await tx.fetchall("SELECT namespace, id, labels FROM leases")
    live: dict[tuple[str, str], bool] = {}
    for r in leases:
        n = Node(Kind.LEASE, r["namespace"], r["id"])
        g.all.append(n)
        labels = gc_labels(r["labels"])
        if expired(labels, now):
            log.debug("expired lease %r in %r", r["id"], r["namespace"])
            continue
        g.roots.append(n)
        live[(r["namespace"], r["id"])] = LABEL_FLAT in labels
    for r in await tx.fetchall("SELECT namespace, lease, type, id FROM lease_resources"):
        flat = live.get((r["namespace"], r["lease"]))
        if flat is None:
            continue
        bit = FLAT if flat else 0
        t = r["type"]
        if t == "content":
            g.roots.append(Node(Kind.CONTENT | bit, r["namespace"], r["id"]))
        elif t == "ingests":
            g.roots.append(Node(Kind.INGEST, r["namespace"], r["id"]))
        elif t == "images":
            g.roots.append(Node(Kind.IMAGE | bit, r["namespace"], r["id"]))
        elif t.startswith("snapshots/"):
            g.roots.append(Node(Kind.SNAPSHOT | bit, r["namespace"], f"{t.split('/', 1)[1]}/{r['id']}"))

    for r in await tx.fetchall("SELECT namespace, name, labels, target_digest FROM images"):
        n = Node(Kind.IMAGE, r["namespace"], r["name"])
        g.all.append(n)
        labels = gc_labels(r["labels"])
        g.labels[n] = labels
        g.edges[n] = [Node(Kind.CONTENT, r["namespace"], r["target_digest"])]
        if not expired(labels, now):
            g.roots.append(n)
        else:
            add_brefs(n, labels)

    for r in await tx.fetchall("SELECT namespace, ref, expected, expires_at FROM ingests"):
        n = Node(Kind.INGEST, r["namespace"], r["ref"])
        g.all.append(n)
        if r["expected"]:
            g.edges[n] = [Node(Kind.CONTENT, r["namespace"], r["expected"])]
        if r["expires_at"] is not None and r["expires_at"] > now_ns:
            g.roots.append(n)

    for r in await tx.fetchall("SELECT namespace, digest, labels FROM content"):
        n = Node(Kind.CONTENT, r["namespace"], r["digest"])
        g.all.append(n)
        labels = gc_labels(r["labels"])
        g.labels[n] = labels
        add_brefs(n, labels)
        if LABEL_ROOT in labels:
            g.roots.append(n)

    for r in await tx.fetchall("SELECT namespace, id, labels, snapshotter, snapshot_key FROM containers"):
        n = Node(Kind.CONTAINER, r["namespace"], r["id"])
        labels = gc_labels(r["labels"])
        g.labels[n] = labels
        add_brefs(n, labels)
        g.roots.append(n)
        if r["snapshotter"]:
            g.edges[n] = [Node(Kind.SNAPSHOT, r["namespace"], f"{r['snapshotter']}/{r['snapshot_key']}")]

    for r in await tx.fetchall("SELECT namespace, snapshotter, key, parent, labels FROM snapshots"):
        n = Node(Kind.SNAPSHOT, r["namespace"], f"{r['snapshotter']}/{r['key']}")
        g.all.append(n)
        labels = gc_labels(r["labels"])
        g.labels[n] = labels
        add_brefs(n, labels)
        if r["parent"]:
            g.edges[n] = [Node(Kind.SNAPSHOT, r["namespace"], f"{r['snapshotter']}/{r['parent']}")]
        if LABEL_ROOT in labels:
            g.roots.append(n)

    for r in await tx.fetchall("SELECT namespace, labels FROM sandboxes"):
        g.roots.extend(label_refs(r["namespace"], gc_labels(r["labels"])))
    return g


async def _remove(tx: Tx, hooks: Hooks, n: Node) -> str:
    ns = n.namespace
    match n.type:
        case Kind.LEASE:
            await tx.execute("DELETE FROM leases WHERE namespace = ? AND id = ?", (ns, n.key))
            return "leases"
        case Kind.IMAGE:
            await tx.execute("DELETE FROM images WHERE namespace = ? AND name = ?", (ns, n.key))
            hooks.publish(tx, ns, "/images/delete", image_pb2.ImageDelete(name=n.key))
            return "images"
        case Kind.INGEST:
            await tx.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, n.key))
            return "ingests"
        case Kind.CONTENT:
            await tx.execute("DELETE FROM content WHERE namespace = ? AND digest = ?", (ns, n.key))
            return "content"
        case Kind.SNAPSHOT:
            snapshotter, key = n.key.split("/", 1)
            hooks.snapshot_removed(tx, ns, snapshotter, key)
            await tx.execute(
                "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
                (ns, snapshotter, key),
            )
            hooks.publish(
                tx, ns, "/snapshot/remove", snapshot_pb2.SnapshotRemove(key=key, snapshotter=snapshotter)
            )
            return "snapshots"
    return "other"


async def collect_metadata(db: Database, hooks: Hooks, now: datetime | None = None) -> dict[str, int]:
    """Mark and sweep the records, in one write transaction; returns counts of removed records."""
    removed: dict[str, int] = {}
    async with db.update() as tx:
        g = await _load(tx, now or datetime.now(UTC))
        marked = tricolor(g.roots, g.refs)
        for n in g.all:
            if n not in marked:
                what = await _remove(tx, hooks, n)
                removed[what] = removed.get(what, 0) + 1
                # The backend object may now be unreferenced: its store needs a sweep.
                if n.type == Kind.SNAPSHOT:
                    hooks.backend_dirty_on_commit(tx, snapshotter=n.key.split("/", 1)[0])
                elif n.type in (Kind.CONTENT, Kind.INGEST):
                    hooks.backend_dirty_on_commit(tx, content=True)
    return removed


class Collector:
    """One garbage collection: records first, then the backends."""

    def __init__(
        self,
        db: Database,
        hooks: Hooks,
        sweep_backends: Callable[[Stats], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.hooks = hooks
        self.sweep_backends = sweep_backends
        self._lock = asyncio.Lock()

    async def collect(self) -> Stats:
        async with self._lock:
            t0 = time.monotonic()
            stats = Stats()
            stats.removed = await collect_metadata(self.db, self.hooks)
            stats.meta_seconds = time.monotonic() - t0
            if self.sweep_backends is not None:
                await self.sweep_backends(stats)
            stats.elapsed = time.monotonic() - t0
            log.debug("garbage collected: %s", stats)
            return stats


@dataclass
class SchedulerConfig:
    """``[plugins."io.containerd.gc.v1.scheduler"]``, as containerd's."""

    # Scheduled collections may take at most this share of real time (0 < x <= 0.5).
    pause_threshold: float = 0.02
    # Collect after this many deletions (0: any deletion schedules a collection).
    deletion_threshold: int = 0
    # Collect at the next scheduled time once this many changes happened (0: never by count).
    mutation_threshold: int = 100
    # Delay between a trigger and the collection ("0ms", "10ms", "1s").
    schedule_delay: str = "0ms"
    # The first collection after start-up.
    startup_delay: str = "100ms"


def parse_duration(s: str) -> float:
    """A Go-style duration such as ``100ms``, ``1.5s``, ``2m`` in seconds."""
    if s in ("0", ""):
        return 0.0
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total = 0.0
    pos = 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise InvalidArgumentError(f"invalid duration {s!r}")
    return total


class Scheduler:
    """Runs the collector after deletions (debounced, and paced so that collections take
    at most ``pause_threshold`` of real time), on demand (``schedule_and_wait``: the
    ``sync`` of image and lease deletion), and once shortly after start-up.

    Pacing, as containerd 1.6's scheduler: once a collection has run, the scheduler checks
    every ``interval`` (the average collection time over ``pause_threshold``, minus itself)
    and collects at such a tick if anything was deleted (or ``mutation_threshold`` changes
    happened) since the last one. So a deletion is collected at the next tick, not the moment
    it happens — in the middle of the requests that usually follow it (``ctr run``: the
    lease's delete, then the container's get and the task's create). Until the first
    collection, a deletion is collected right away; ``schedule_and_wait`` and a reached
    ``deletion_threshold`` always are (after ``schedule_delay``)."""

    MIN_GC_TIME = 0.005

    def __init__(self, collector: Collector, config: SchedulerConfig | None = None) -> None:
        cfg = config or SchedulerConfig()
        self.collector = collector
        self.pause_threshold = min(max(cfg.pause_threshold, 0.0), 0.5)
        self.deletion_threshold = max(cfg.deletion_threshold, 0)
        self.mutation_threshold = max(cfg.mutation_threshold, 0)
        self.schedule_delay = parse_duration(cfg.schedule_delay)
        self.startup_delay = parse_duration(cfg.startup_delay)
        self._wake = asyncio.Event()
        self._deletions = 0
        self._mutations = 0
        self._waiters: list[asyncio.Future[Stats]] = []
        # Loop time of the next collection (None: nothing pending), and the earliest
        # time the pause threshold allows for a collection not asked for explicitly.
        self._next: float | None = None
        self._earliest = 0.0
        self._gc_time_sum = 0.0
        self._collections = 0
        # Time between ticks, once collections have run (containerd starts at one second and
        # keeps that when the pause threshold is 0).
        self._interval = 1.0
        self._task: asyncio.Task[None] | None = None
        self.last_stats: Stats | None = None

    @property
    def collections(self) -> int:
        return self._collections

    def start(self) -> None:
        if self._task is None:
            self._plan(asyncio.get_running_loop().time() + self.startup_delay)
            self._task = asyncio.create_task(self._run(), name="gc-scheduler")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.cancel()

    def _plan(self, when: float) -> None:
        if self._next is None or when < self._next:
            self._next = when
            self._wake.set()

    def mutation(self, dirty: bool) -> None:
        """The stores' mutation callback (``Hooks.on_mutation``)."""
        self._mutations += 1
        if dirty:
            self._deletions += 1
        if self._task is None:
            return
        now = asyncio.get_running_loop().time()
        if self.deletion_threshold > 0 and self._deletions >= self.deletion_threshold:
            self._plan(now + self.schedule_delay)
        elif self._collections == 0 and (
            (self.deletion_threshold == 0 and self._deletions > 0)
            or (self.mutation_threshold > 0 and self._mutations >= self.mutation_threshold)
        ):
            self._plan(max(now + self.schedule_delay, self._earliest))
        # Otherwise the next tick (at most one interval away) collects it.

    def _due(self) -> bool:
        """Whether a tick has something to collect."""
        return bool(
            self._waiters
            or self._collections == 0
            or self._deletions > 0
            or (self.mutation_threshold > 0 and self._mutations >= self.mutation_threshold)
        )

    async def schedule_and_wait(self) -> Stats:
        """Collect as soon as possible and return the stats of that collection."""
        if self._task is None:
            return await self.collector.collect()
        fut: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._plan(asyncio.get_running_loop().time() + self.schedule_delay)
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if self._next is None:
                await self._wake.wait()
                continue
            delay = self._next - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            if not self._due():
                self._next = loop.time() + self._interval
                continue
            await self._collect_once(loop)

    async def _collect_once(self, loop: asyncio.AbstractEventLoop) -> None:
        waiters, self._waiters = self._waiters, []
        self._next = None
        self._deletions = 0
        self._mutations = 0
        try:
            stats = await self.collector.collect()
        except Exception as e:
            log.error("garbage collection failed: %s", e, exc_info=True)
            # Retry a little later: whatever was to be collected still is.
            self._earliest = loop.time() + 1.0
            self._deletions += 1
            self._plan(self._earliest)
            for w in waiters:
                if not w.done():
                    w.set_exception(e)
            return
        self.last_stats = stats
        self._gc_time_sum += stats.elapsed
        self._collections += 1
        if self.pause_threshold > 0:
            avg = max(self._gc_time_sum / self._collections, self.MIN_GC_TIME)
            self._interval = avg / self.pause_threshold - avg
        self._earliest = loop.time() + self._interval
        for w in waiters:
            if not w.done():
                w.set_result(stats)
        # The next tick; it collects what was deleted meanwhile (also during this collection).
        self._plan(self._earliest)
