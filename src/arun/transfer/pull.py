"""Pull: an image from a registry into the content store, unpacked into a snapshotter.

The sequence, and why it is in this order:

1. Take a lease (expiring after a day, in case the daemon dies mid-pull) and make it the
   current lease, so every blob, ingest and snapshot created below is held by it and
   garbage collection cannot take them before the image record references them.
2. Resolve the reference to the descriptor of its index or manifest.
3. Fetch the index/manifest (verified against the resolved digest) and pick the
   manifest(s) for the platform; fetch each manifest and its config. Each parent is
   committed with containerd's GC labels for its children
   (``containerd.io/gc.ref.content.m.<i>``, ``.config``, ``.l.<i>``) and every blob with
   ``containerd.io/distribution.source.<registry>=<repository>``.
4. Layers: find which layer stacks already exist as snapshots (named by ChainID, as
   containerd names them) and which blobs are already stored; download only what is
   missing, ``max_concurrent_downloads`` at a time, bottom layer first. Digest and size
   are checked while streaming (the commit fails on a mismatch; more bytes than the
   descriptor says fail at once).
5. Unpack each layer as soon as it *and every layer below it* are present: prepare
   ``extract-<unique> <chainID>`` on the parent's snapshot, apply the tar (the differ
   decompresses and extracts in a worker thread), check the result against the config's
   diff ID, commit as ``<chainID>``, then label the blob ``containerd.io/uncompressed``.
   Downloads of upper layers continue meanwhile.
6. Label the config ``containerd.io/gc.ref.snapshot.<snapshotter>=<top chainID>`` so the
   snapshots live as long as the image.
7. Create (or update) the image record — last, so an image never points at missing
   content — and delete the lease.

On failure nothing references what was fetched: the lease goes, and GC removes it.
A second pull of the same image downloads nothing: present blobs and snapshots are
skipped (only the tag is resolved again).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from arun import errdefs, labels, platforms
from arun.images import mediatypes as mt
from arun.images.manifest import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    chain_ids,
    children_labels,
    parse_config,
    parse_index,
    parse_manifest,
)
from arun.remotes.client import RegistryClient
from arun.remotes.repository import Repository
from arun.transfer.progress import Phase, Progress, ProgressCallback
from arun.transfer.stores import Snapshots, Stores

log = logging.getLogger(__name__)

__all__ = [
    "LABEL_DISTRIBUTION_SOURCE",
    "LABEL_SNAPSHOT_REF",
    "LABEL_UNCOMPRESSED",
    "PullOptions",
    "PullResult",
    "pull",
]

LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
LABEL_DISTRIBUTION_SOURCE = "containerd.io/distribution.source"
LABEL_SNAPSHOT_REF = "containerd.io/snapshot.ref"
LABEL_SNAPSHOT_DIFF_ID = "containerd.io/snapshot/diff-id"
LABEL_SNAPSHOT_PARENT = "containerd.io/snapshot/parent-chain-id"
LABEL_GC_EXPIRE = "containerd.io/gc.expire"
LABEL_GC_SNAPSHOT = "containerd.io/gc.ref.snapshot."
# Downloaded bytes are handed to the content writer in pieces of about this size.
_WRITE_BATCH = 1 << 20
# JSON documents bigger than this are parsed in a worker thread.
_BIG_JSON = 256 << 10
# A layer being downloaded keeps up to this many bytes in memory for an extraction that may
# start before the download ends; beyond it the extraction reads the rest from the store.
_FEED_BUFFER = 8 << 20


class _LayerFeed:
    """The bytes of one layer download, handed to an extraction running in a worker thread.

    The download (on the loop) ``push``es each piece after writing it to the content
    store and ``finish``es after the commit verified digest and size (or with the error
    that failed it). The extraction (``attach``, then calls from its thread) gets the
    pieces in order; it sees the end of the stream only once the commit succeeded, so a
    layer snapshot is never committed from unverified bytes. Memory is bounded: past
    ``limit`` buffered bytes the feed stops keeping pieces, and the extraction reads the
    rest from the committed blob (``read_stored``). A download that finishes before any
    extraction attached drops its buffer at once (the unpack then reads the store).
    """

    def __init__(
        self,
        read_stored: Callable[[int], bytes],
        limit: int = _FEED_BUFFER,
    ) -> None:
        self._cv = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._limit = limit
        self._overflow = False  # stopped buffering: the rest comes from the store
        self._finished = False
        self._error: BaseException | None = None
        self._attached = False
        self._released = False
        self._consumed = 0
        self._read_stored = read_stored

    # -- the download's side (event loop) --

    def push(self, data: bytes) -> None:
        with self._cv:
            if self._released or self._overflow:
                return
            if self._buffered + len(data) > self._limit:
                self._overflow = True
            else:
                self._chunks.append(data)
                self._buffered += len(data)
            self._cv.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self._cv:
            self._finished = True
            self._error = error
            if not self._attached:
                self._release_locked()
            self._cv.notify_all()

    # -- the unpack's side --

    def attach(self) -> bool:
        """Claim the stream; False if it is gone (the download finished unclaimed)."""
        with self._cv:
            if self._released or self._attached:
                return False
            self._attached = True
            return True

    def release(self) -> None:
        """The extraction is over (or never started): drop what is buffered."""
        with self._cv:
            self._release_locked()
            self._cv.notify_all()

    def _release_locked(self) -> None:
        self._released = True
        self._chunks.clear()
        self._buffered = 0

    def __call__(self) -> bytes:
        """The next piece (blocking; called in the extraction thread); b"" at the verified end."""
        with self._cv:
            while True:
                if self._chunks:
                    data = self._chunks.popleft()
                    self._buffered -= len(data)
                    self._consumed += len(data)
                    return data
                if self._released:
                    raise errdefs.CanceledError("layer stream released")
                if self._finished:
                    if self._error is not None:
                        raise self._error
                    if not self._overflow:
                        return b""
                    break
                self._cv.wait()
        data = self._read_stored(self._consumed)
        self._consumed += len(data)
        return data


class _StoredTail:
    """Reads of a committed blob from a worker thread, through the loop (``_LayerFeed``'s
    source once it stopped buffering). The worker's context carries the namespace."""

    def __init__(self, content: Any, desc: Descriptor, loop: asyncio.AbstractEventLoop) -> None:
        self._content = content
        self._desc = desc
        self._loop = loop
        self._reader: Any = None

    def _run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    def __call__(self, offset: int) -> bytes:
        if offset >= self._desc.size:
            return b""
        if self._reader is None:
            self._reader = self._run(self._content.reader_at(self._desc))
        data: bytes = self._run(self._reader.read_at(offset, min(_WRITE_BATCH, self._desc.size - offset)))
        return data

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()


@dataclass
class PullOptions:
    """How to pull.

    ``platforms``: the matcher choosing index entries (default: this host, with
    containerd's compatible variants). ``all_platforms``: fetch every entry (unpack
    still only the best match for ``platforms``). ``image_name``: the record's name
    (default: the reference as given). ``image_labels``: extra record labels.
    """

    platforms: platforms.Matcher | None = None
    all_platforms: bool = False
    unpack: bool = True
    max_concurrent_downloads: int = 3
    image_name: str = ""
    image_labels: dict[str, str] = field(default_factory=dict)
    lease_expiry: float = 24 * 3600.0
    on_progress: ProgressCallback | None = None


@dataclass
class PullResult:
    name: str
    image: Any
    target: Descriptor
    manifest: Descriptor
    config: Descriptor
    chain_id: str
    # Blobs downloaded by this pull (empty on a repeated pull) and their bytes.
    fetched: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    unpacked: list[str] = field(default_factory=list)


def _unique() -> str:
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


def _ref_kind(desc: Descriptor) -> str:
    """containerd's ingest ref prefix (``remotes.MakeRefKey``)."""
    if mt.is_manifest(desc.media_type):
        return "manifest"
    if mt.is_index(desc.media_type):
        return "index"
    if mt.is_layer(desc.media_type):
        return "layer"
    if mt.is_known_config(desc.media_type):
        return "config"
    return "unknown"


def _first_error(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return eg.exceptions[0]


def _append_source(existing: str, repo: str) -> str:
    repos = {r for r in existing.split(",") if r} if existing else set()
    repos.add(repo)
    return ",".join(sorted(repos))


async def _load_json_in_thread(parse: Any, data: bytes, *args: Any) -> Any:
    if len(data) > _BIG_JSON:
        return await asyncio.to_thread(parse, data, *args)
    return parse(data, *args)


class _Puller:
    def __init__(self, client: RegistryClient, ref: str, stores: Stores, opts: PullOptions) -> None:
        self.client = client
        self.ref = ref
        self.stores = stores
        self.opts = opts
        self.repo: Repository = client.repository(ref)
        self.source_key = f"{LABEL_DISTRIBUTION_SOURCE}.{self.repo.registry}"
        self.fetched: list[str] = []
        self.bytes = 0
        self.unpacked: list[str] = []
        self.matcher = opts.platforms or platforms.default()
        # Streaming unpack (a layer extracted while it downloads) when the differ can.
        self.stream_unpack = False
        self.feeds: dict[int, tuple[_LayerFeed, _StoredTail]] = {}
        self.started: dict[int, asyncio.Future[None]] = {}
        self.timings: dict[str, float] = {}

    # -- progress ----------------------------------------------------------------------------

    def emit(self, phase: Phase, desc: Descriptor | None = None, kind: str = "", **kw: Any) -> None:
        cb = self.opts.on_progress
        if cb is None:
            return
        ev = Progress(
            self.ref,
            phase,
            digest=desc.digest if desc else "",
            kind=kind,
            media_type=desc.media_type if desc else "",
            total=desc.size if desc else 0,
            **kw,
        )
        try:
            cb(ev)
        except Exception:
            log.exception("progress callback failed")

    # -- content ---------------------------------------------------------------------------

    async def _info(self, digest: str) -> Any | None:
        try:
            return await self.stores.content.info(digest)
        except errdefs.NotFoundError:
            return None

    async def _label(self, digest: str, new: Mapping[str, str]) -> None:
        """Add labels to a stored blob (the source label is appended to, not replaced)."""
        info = await self.stores.content.info(digest)
        updates = dict(new)
        if self.source_key in updates:
            updates[self.source_key] = _append_source(info.labels.get(self.source_key, ""), self.repo.name)
            try:
                labels.validate(self.source_key, updates[self.source_key])
            except errdefs.InvalidArgumentError:
                log.warning("skipping distribution source label on %s: too long", digest)
                del updates[self.source_key]
        changed = {k: v for k, v in updates.items() if info.labels.get(k) != v}
        if not changed:
            return
        info.labels.update(changed)
        await self.stores.content.update(info, [f"labels.{k}" for k in changed])

    def _commit_labels(self, extra: Mapping[str, str]) -> dict[str, str]:
        out = dict(extra)
        out[self.source_key] = self.repo.name
        return out

    async def _read_stored(self, desc: Descriptor) -> bytes:
        reader = await self.stores.content.reader_at(desc)
        try:
            parts = []
            off = 0
            while off < desc.size:
                chunk = await reader.read_at(off, min(1 << 20, desc.size - off))
                if not chunk:
                    break
                parts.append(chunk)
                off += len(chunk)
            return b"".join(parts)
        finally:
            await reader.close()

    async def _open_writer(self, desc: Descriptor) -> Any | None:
        """A writer for ``desc``; None if it is already committed. Waits while another
        pull holds the same ingest."""
        ref = f"{_ref_kind(desc)}-{desc.digest}"
        delay = 0.05
        while True:
            try:
                return await self.stores.content.writer(ref, total=desc.size, expected=desc.digest)
            except errdefs.AlreadyExistsError:
                return None
            except errdefs.UnavailableError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def store_small(
        self, desc: Descriptor, body: bytes, child_labels: Mapping[str, str], kind: str
    ) -> None:
        """Commit a verified manifest/index/config with its labels (or label the stored one)."""
        w = await self._open_writer(desc)
        if w is None:
            self.emit(Phase.EXISTS, desc, kind)
            await self._label(desc.digest, self._commit_labels(child_labels))
            return
        try:
            await w.truncate(0)
            await w.write(body)
            self.bytes += len(body)
            self.fetched.append(desc.digest)
            await w.commit(desc.size, desc.digest, labels=self._commit_labels(child_labels))
        except errdefs.AlreadyExistsError:
            await self._label(desc.digest, self._commit_labels(child_labels))
        finally:
            await asyncio.shield(w.close())
        self.emit(Phase.DOWNLOADED, desc, kind, offset=desc.size)

    async def fetch_small(self, desc: Descriptor, kind: str, *, manifest: bool | None = None) -> bytes:
        """The bytes of a manifest, index or config: from the store if present, else the registry."""
        if await self._info(desc.digest) is not None:
            return await self._read_stored(desc)
        self.emit(Phase.DOWNLOADING, desc, kind, offset=0)
        return bytes(await self.repo.fetch_bytes(desc, manifest=manifest))

    def _mark_started(self, index: int) -> None:
        fut = self.started.get(index)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def fetch_layer(self, desc: Descriptor, sem: asyncio.Semaphore, index: int = -1) -> None:
        """Download one layer blob into the content store (resuming a left-over ingest).

        With streaming unpack, a download from the start also feeds the bytes it writes to
        ``self.feeds[index]``, so the unpack may extract the layer while it downloads.
        """
        self.emit(Phase.WAITING, desc, "layer")
        async with sem:
            try:
                await self._fetch_layer(desc, index)
            finally:
                self._mark_started(index)

    async def _fetch_layer(self, desc: Descriptor, index: int) -> None:
        t0 = time.perf_counter()
        w = await self._open_writer(desc)
        if w is None:
            self.emit(Phase.EXISTS, desc, "layer")
            await self._label(desc.digest, self._commit_labels({}))
            return
        committed = False
        feed: _LayerFeed | None = None
        try:
            st = await w.status()
            offset = int(getattr(st, "offset", 0))
            if offset > desc.size:
                await w.truncate(0)
                offset = 0
            if self.stream_unpack and offset == 0 and index >= 0:
                tail = _StoredTail(self.stores.content, desc, asyncio.get_running_loop())
                feed = _LayerFeed(tail)
                self.feeds[index] = (feed, tail)
                self._mark_started(index)
            self.emit(Phase.DOWNLOADING, desc, "layer", offset=offset)
            async with contextlib.aclosing(self.repo.iter_blob(desc, offset)) as chunks:
                # Bodies arrive in pieces of a few hundred KiB; the writer hops to threads
                # per write, so hand it about a MiB at a time.
                pending: list[bytes] = []
                size = 0
                async for data in chunks:
                    pending.append(data)
                    size += len(data)
                    if size >= _WRITE_BATCH:
                        batch = b"".join(pending) if len(pending) > 1 else pending[0]
                        await w.write(batch)
                        if feed is not None:
                            feed.push(batch)
                        offset += size
                        self.bytes += size
                        pending, size = [], 0
                        self.emit(Phase.DOWNLOADING, desc, "layer", offset=offset)
                if pending:
                    batch = b"".join(pending)
                    await w.write(batch)
                    if feed is not None:
                        feed.push(batch)
                    offset += size
                    self.bytes += size
                    self.emit(Phase.DOWNLOADING, desc, "layer", offset=offset)
            t1 = time.perf_counter()
            try:
                committed = True
                await w.commit(desc.size, desc.digest, labels=self._commit_labels({}))
            except errdefs.AlreadyExistsError:
                await self._label(desc.digest, self._commit_labels({}))
            except errdefs.FailedPreconditionError as exc:
                # Bad bytes: drop the ingest so a retry starts from scratch.
                with contextlib.suppress(errdefs.ArunError):
                    await self.stores.content.abort(f"layer-{desc.digest}")
                raise errdefs.FailedPreconditionError(
                    f"layer {desc.digest} of {self.ref!r}: {exc.message}"
                ) from exc
            log.debug(
                "%s: layer %s downloaded in %.3fs, committed in %.3fs",
                self.ref, desc.digest, t1 - t0, time.perf_counter() - t1,
            )  # fmt: skip
            if feed is not None:
                feed.finish()
        except BaseException as exc:
            if feed is not None:
                stopped = errdefs.CanceledError(f"download of {desc.digest} stopped")
                feed.finish(exc if isinstance(exc, Exception) else stopped)
            raise
        finally:
            if not committed:
                await asyncio.shield(w.close())
        self.fetched.append(desc.digest)
        self.emit(Phase.DOWNLOADED, desc, "layer", offset=desc.size)

    # -- documents ----------------------------------------------------------------------------

    async def root(self) -> tuple[Descriptor, bytes]:
        self.emit(Phase.RESOLVING)
        desc = await self.repo.resolve()
        self.emit(Phase.RESOLVED, desc, "root")
        body = await self.fetch_small(desc, "root", manifest=True)
        return self._classify(desc, body), body

    def _classify(self, desc: Descriptor, body: bytes) -> Descriptor:
        """Registries without a proper Content-Type: recognise the document by its JSON."""
        if mt.is_index(desc.media_type) or mt.is_manifest(desc.media_type):
            return desc
        if desc.media_type == mt.DOCKER_MANIFEST_V1:
            raise errdefs.UnimplementedError(f"{self.ref!r}: Docker schema 1 manifests are not supported")
        if desc.media_type not in ("", "application/json", "text/plain", "application/octet-stream"):
            raise errdefs.InvalidArgumentError(
                f"{self.ref!r}: unsupported media type {desc.media_type!r}: not an image manifest or index"
            )
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise errdefs.InvalidArgumentError(
                f"{self.ref!r}: the registry answered with a {desc.media_type or 'untyped'} document "
                "that is not a manifest or index (not JSON)"
            ) from None
        declared = doc.get("mediaType", "") if isinstance(doc, dict) else ""
        if isinstance(declared, str) and (mt.is_index(declared) or mt.is_manifest(declared)):
            return replace(desc, media_type=declared)
        if isinstance(doc, dict) and "manifests" in doc:
            return replace(desc, media_type=mt.OCI_INDEX)
        if isinstance(doc, dict) and "config" in doc and "layers" in doc:
            return replace(desc, media_type=mt.OCI_MANIFEST)
        raise errdefs.InvalidArgumentError(
            f"{self.ref!r}: document is neither an image manifest nor an index"
        )

    async def manifest(self, desc: Descriptor, body: bytes | None = None) -> tuple[Manifest, bytes]:
        if not mt.is_manifest(desc.media_type):
            raise errdefs.InvalidArgumentError(
                f"{self.ref!r}: unsupported manifest media type {desc.media_type!r} for {desc.digest}"
            )
        if body is None:
            body = await self.fetch_small(desc, "manifest")
        m: Manifest = await _load_json_in_thread(
            parse_manifest, body, desc.media_type, f"manifest {desc.digest}"
        )
        await self.store_small(desc, body, children_labels(m.children()), "manifest")
        return m, body

    async def config(self, m: Manifest) -> ImageConfig:
        desc = m.config
        if not mt.is_config(desc.media_type):
            raise errdefs.InvalidArgumentError(
                f"{self.ref!r}: unsupported config media type {desc.media_type!r}"
            )
        body = await self.fetch_small(desc, "config")
        cfg: ImageConfig = await _load_json_in_thread(parse_config, body, f"image config {desc.digest}")
        if len(cfg.diff_ids) != len(m.layers):
            raise errdefs.InvalidArgumentError(
                f"{self.ref!r}: the config lists {len(cfg.diff_ids)} layers, the manifest {len(m.layers)}"
            )
        await self.store_small(desc, body, {}, "config")
        return cfg

    # -- layers and unpack -----------------------------------------------------------------------

    async def _snapshot_exists(self, sn: Snapshots, name: str) -> bool:
        try:
            await sn.stat(name)
            return True
        except errdefs.NotFoundError:
            return False

    async def layers(self, m: Manifest, cfg: ImageConfig, unpack: bool) -> str:
        """Download (and unpack) ``m``'s layers; returns the top chain ID."""
        chain = chain_ids(cfg.diff_ids)
        n = len(m.layers)
        sn = self.stores.snapshotter if unpack else None
        if unpack:
            for layer in m.layers:
                if mt.layer_compression(layer.media_type) is None:
                    raise errdefs.UnimplementedError(
                        f"{self.ref!r}: cannot unpack layer {layer.digest}: unsupported media type "
                        f"{layer.media_type!r}"
                    )
            if sn is None or self.stores.applier is None:
                raise errdefs.FailedPreconditionError("unpack needs a snapshotter and a differ")
        # Layer stacks already unpacked (a committed chain implies its parents).
        first_needed = 0
        if sn is not None:
            for i in range(n - 1, -1, -1):
                if await self._snapshot_exists(sn, chain[i]):
                    first_needed = i + 1
                    for j in range(i + 1):
                        self.emit(Phase.EXISTS, m.layers[j], "layer")
                    break
        needed = range(first_needed, n) if sn is not None else range(n)
        sem = asyncio.Semaphore(max(1, self.opts.max_concurrent_downloads))
        done: dict[int, asyncio.Future[None]] = {}
        self.stream_unpack = sn is not None and callable(getattr(self.stores.applier, "apply_stream", None))
        loop = asyncio.get_running_loop()
        self.feeds.clear()
        self.started = {i: loop.create_future() for i in needed} if self.stream_unpack else {}
        try:
            async with asyncio.TaskGroup() as tg:
                for i in needed:
                    done[i] = tg.create_task(self.fetch_layer(m.layers[i], sem, i))
                if sn is not None:
                    tg.create_task(self.unpack(sn, m, cfg, chain, first_needed, done))
        except BaseExceptionGroup as eg:
            raise _first_error(eg) from None
        finally:
            for i in list(self.feeds):
                await asyncio.shield(self._end_stream(i))
        return chain[-1] if chain else ""

    async def unpack(
        self,
        sn: Snapshots,
        m: Manifest,
        cfg: ImageConfig,
        chain: Sequence[str],
        start: int,
        done: Mapping[int, asyncio.Future[None]],
    ) -> None:
        applier = self.stores.applier
        assert applier is not None
        for i in range(start, len(m.layers)):
            t_wait = time.perf_counter()
            feed = await self._stream_for(i, done)
            if feed is None:
                await done[i]
            t_ready = time.perf_counter()
            layer = m.layers[i]
            parent = chain[i - 1] if i > 0 else ""
            snap_labels = {LABEL_SNAPSHOT_REF: chain[i], LABEL_SNAPSHOT_DIFF_ID: cfg.diff_ids[i]}
            if parent:
                snap_labels[LABEL_SNAPSHOT_PARENT] = parent
            key = ""
            mounts: list[Any] = []
            for _ in range(3):
                key = f"extract-{_unique()} {chain[i]}"
                try:
                    mounts = await sn.prepare(key, parent, labels=snap_labels)
                    break
                except errdefs.AlreadyExistsError:
                    if await self._snapshot_exists(sn, chain[i]):
                        key = ""
                        break
            else:
                raise errdefs.AlreadyExistsError(f"unable to prepare extraction snapshot for {chain[i]}")
            if not key:  # unpacked by someone else meanwhile
                if feed is not None:
                    await self._end_stream(i)
                    await done[i]
                continue
            self.emit(Phase.UNPACKING, layer, "layer")
            t_apply = time.perf_counter()
            try:
                diff = await self._apply(applier, layer, mounts, i, feed, done)
                t_commit = time.perf_counter()
                if diff.digest != cfg.diff_ids[i]:
                    raise errdefs.FailedPreconditionError(
                        f"wrong diff id {diff.digest} calculated on extraction of layer {layer.digest}, "
                        f"the config says {cfg.diff_ids[i]}"
                    )
                try:
                    await sn.commit(chain[i], key, labels=snap_labels)
                except errdefs.AlreadyExistsError:
                    await asyncio.shield(sn.remove(key))
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(sn.remove(key))
                raise
            await self._label(layer.digest, {LABEL_UNCOMPRESSED: cfg.diff_ids[i]})
            self.unpacked.append(chain[i])
            self.emit(Phase.UNPACKED, layer, "layer")
            now = time.perf_counter()
            log.debug(
                "%s: layer %s unpacked (%s): waited %.3fs, prepared %.3fs, applied %.3fs, committed %.3fs",
                self.ref, layer.digest, "streamed" if feed is not None else "from the store",
                t_ready - t_wait, t_apply - t_ready, t_commit - t_apply, now - t_commit,
            )  # fmt: skip

    async def _stream_for(self, index: int, done: Mapping[int, asyncio.Future[None]]) -> _LayerFeed | None:
        """The feed of layer ``index`` if its download is under way and can be extracted as it
        goes; None when the unpack should wait for the download and read the store."""
        if not self.stream_unpack or done[index].done():
            return None
        started = self.started.get(index)
        if started is None:
            return None
        await asyncio.wait({started, done[index]}, return_when=asyncio.FIRST_COMPLETED)
        entry = self.feeds.get(index)
        if entry is None or done[index].done() or not entry[0].attach():
            return None
        return entry[0]

    async def _end_stream(self, index: int) -> None:
        entry = self.feeds.pop(index, None)
        if entry is not None:
            entry[0].release()
            await entry[1].close()

    async def _apply(
        self,
        applier: Any,
        layer: Descriptor,
        mounts: list[Any],
        index: int,
        feed: _LayerFeed | None,
        done: Mapping[int, asyncio.Future[None]],
    ) -> Any:
        """Apply layer ``index``: from its download's feed, or from the content store."""
        if feed is not None:
            try:
                diff = await applier.apply_stream(layer, mounts, feed)
            except errdefs.UnimplementedError:
                diff = None  # no differ streams this layer: wait for the blob instead
            except Exception:
                # Bad bytes usually break the extraction before the commit sees the digest
                # mismatch: report what the download finds, as an unpack after it would.
                await asyncio.wait({done[index]})
                if not done[index].cancelled() and done[index].exception() is not None:
                    raise done[index].exception() from None  # type: ignore[misc]
                raise
            finally:
                await asyncio.shield(self._end_stream(index))
            # The feed ends only after the commit verified the blob; surface the download's
            # own outcome all the same.
            await done[index]
            if diff is not None:
                return diff
        return await applier.apply(layer, mounts)

    # -- the whole pull --------------------------------------------------------------------------

    async def run(self) -> PullResult:
        stores = self.stores
        lease_id = ""
        if stores.leases is not None:
            lease_id = f"pull-{time.time_ns()}-{os.urandom(4).hex()}"
            expire = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.opts.lease_expiry)
            await stores.leases.create(lease_id, {LABEL_GC_EXPIRE: expire.strftime("%Y-%m-%dT%H:%M:%SZ")})
        try:
            with stores.lease_context(lease_id or None):
                return await self._run()
        except BaseException as exc:
            self.emit(Phase.FAILED, error=str(exc))
            raise
        finally:
            if stores.leases is not None and lease_id:
                with contextlib.suppress(errdefs.NotFoundError):
                    await asyncio.shield(stores.leases.delete(lease_id))

    async def _run(self) -> PullResult:
        target, body = await self.root()
        manifests: list[Descriptor]
        if mt.is_index(target.media_type):
            index: Index = await _load_json_in_thread(
                parse_index, body, target.media_type, f"index {target.digest}"
            )
            if self.opts.all_platforms:
                manifests = index.select(platforms.ALL, limit=None)
                best = index.select(self.matcher, limit=1)
            else:
                manifests = best = index.select(self.matcher, limit=1)
            if not best:
                offered = sorted({platforms.format(d.platform) for d in index.manifests if d.platform})
                raise errdefs.NotFoundError(
                    f"{self.ref!r}: no image for platform {self.matcher!r} in the index (it offers {offered})"
                )
            await self.store_small(target, body, children_labels(manifests), "index")
            chosen = best[0]
            others = [d for d in manifests if d.digest != chosen.digest]
        else:
            chosen, others = target, []
        # The chosen platform first: it is the one unpacked.
        m, _ = await self.manifest(chosen, body if chosen is target else None)
        cfg = await self.config(m)
        if target is chosen and not self.matcher.match(cfg.platform) and not self.opts.all_platforms:
            log.info(
                "%s: image platform %s does not match %r",
                self.ref,
                platforms.format(cfg.platform),
                self.matcher,
            )
        chain_id = await self.layers(m, cfg, self.opts.unpack)
        if self.opts.unpack and chain_id:
            key = f"{LABEL_GC_SNAPSHOT}{self.stores.snapshotter_name}"
            await self._label(m.config.digest, {key: chain_id})
        for d in others:
            om, _ = await self.manifest(d)
            ocfg = await self.config(om)
            await self.layers(om, ocfg, unpack=False)
        name = self.opts.image_name or self.ref
        record = await self._record(name, target)
        self.emit(Phase.DONE, target, "image")
        return PullResult(
            name=name,
            image=record,
            target=target,
            manifest=chosen,
            config=m.config,
            chain_id=chain_id,
            fetched=self.fetched,
            bytes_downloaded=self.bytes,
            unpacked=self.unpacked,
        )

    async def _record(self, name: str, target: Descriptor) -> Any:
        images = self.stores.images
        img_labels = {**self.stores.image_labels, **self.opts.image_labels}
        image = self.stores.make_image(name, target, img_labels)
        for _ in range(3):
            try:
                return await images.create(image)
            except errdefs.AlreadyExistsError:
                try:
                    return await images.update(image)
                except errdefs.NotFoundError:
                    continue  # deleted meanwhile: create again
        raise errdefs.AbortedError(f"image {name!r} changed concurrently while recording the pull")


async def pull(
    client: RegistryClient, ref: str, stores: Stores, options: PullOptions | None = None
) -> PullResult:
    """Pull ``ref`` (fully qualified: ``host/path:tag``, ``…@sha256:…``) into ``stores``.

    The caller has entered the namespace. Errors are errdefs errors: NotFoundError (no
    such image, or nothing for the platform), UnauthenticatedError/PermissionDeniedError,
    UnavailableError (registry unreachable or failing), DeadlineExceededError (stalled),
    FailedPreconditionError (digest or size mismatch), InvalidArgumentError (malformed
    documents or unsupported media types), UnimplementedError (unsupported layer types).
    """
    return await _Puller(client, ref, stores, options or PullOptions()).run()
