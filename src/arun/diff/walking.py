"""The walking differ (containerd's ``io.containerd.differ.v1.walking``): ``Applier`` and ``Comparer``.

Apply reads the layer from the content store, decompresses it (gzip, zstd,
or none), verifies the compressed digest and size against the descriptor,
and extracts it in a worker thread while hashing the uncompressed stream
(the diffID it returns). Where the mounts allow, it writes straight into the
directory instead of mounting (containerd's overlay optimisation, extended
to binds): a single overlay with an ``upperdir`` is applied to the upper
dir with whiteouts in overlayfs form, a single read-write bind to its
source; anything else is mounted on a temporary directory first.

Compare mounts both sides read-only (binds are read in place), walks them
and writes a tar (gzip by default) into the content store, committing it
with the ``containerd.io/uncompressed`` label.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from arun.asyncutil import to_thread_complete, to_thread_interruptible
from arun.core import mediatypes
from arun.core.content import ContentStore, Descriptor, ReaderAt, parse_digest
from arun.core.diff import UNCOMPRESSED_LABEL
from arun.core.mount import Mount, Mounter, overlay_dirs, read_only
from arun.diff.archive import ApplyOptions, ApplyStats, apply_tar
from arun.diff.changes import write_diff
from arun.diff.compression import Compressor, LayerReader
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    UnimplementedError,
)
from arun.mount import temp_mount

log = logging.getLogger(__name__)

__all__ = ["WalkingDiff"]

_READ_CHUNK = 1 << 20


def _unique_ref() -> str:
    return f"{time.time_ns()}-{base64.urlsafe_b64encode(secrets.token_bytes(3)).decode()}"


class WalkingDiff:
    """``Applier`` and ``Comparer`` over a content store.

    ``mounter`` does the temporary mounts (default: ``arun.mount.LinuxMounter``);
    ``tmp_root`` is where temporary mount points go (default: the system temp dir).
    """

    def __init__(
        self, store: ContentStore, *, mounter: Mounter | None = None, tmp_root: str | None = None
    ) -> None:
        self.store = store
        self.mounter = mounter
        self.tmp_root = tmp_root

    # ------------------------------------------------------------------ apply

    async def apply(self, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        compression = self._check(desc, mounts)
        ra = await self.store.reader_at(desc)
        try:
            return await self._apply(desc, mounts, compression, _source(ra, asyncio.get_running_loop()))
        finally:
            await ra.close()

    async def apply_stream(
        self, desc: Descriptor, mounts: Sequence[Mount], source: Callable[[], bytes]
    ) -> Descriptor:
        """Apply ``desc`` reading its (compressed) bytes from ``source`` instead of the content
        store: a blocking callable, called in the worker thread, returning the next chunk and
        ``b""`` at the end — a pull hands over a layer while it is still downloading. The
        bytes read are checked against the descriptor's digest and size, as for ``apply``;
        ``source`` may raise to abort the extraction (the caller then removes the snapshot).
        """
        compression = self._check(desc, mounts)
        return await self._apply(desc, mounts, compression, source)

    @staticmethod
    def _check(desc: Descriptor, mounts: Sequence[Mount]) -> mediatypes.Compression:
        compression = mediatypes.layer_compression(desc.media_type)
        if compression is None:
            raise UnimplementedError(f"unsupported layer media type {desc.media_type!r}")
        parse_digest(desc.digest)
        if not mounts:
            raise InvalidArgumentError("no mounts to apply the layer to")
        return compression

    async def _apply(
        self,
        desc: Descriptor,
        mounts: Sequence[Mount],
        compression: mediatypes.Compression,
        source: Callable[[], bytes],
    ) -> Descriptor:
        async with self._apply_target(mounts) as (root, opts):
            reader, _stats = await self._extract(source, compression, root, opts)
        if reader.compressed_digest() != desc.digest:
            raise FailedPreconditionError(
                f"layer {desc.digest}: content digest {reader.compressed_digest()} does not match"
            )
        if desc.size > 0 and reader.raw_size != desc.size:
            raise FailedPreconditionError(
                f"layer {desc.digest}: size {reader.raw_size} does not match {desc.size}"
            )
        return Descriptor(mediatypes.OCI_LAYER, reader.digest(), reader.size)

    @contextlib.asynccontextmanager
    async def _apply_target(self, mounts: Sequence[Mount]) -> AsyncIterator[tuple[str, ApplyOptions]]:
        if len(mounts) == 1 and not mounts[0].target:
            m = mounts[0]
            if m.type == "overlay":
                upper, lowers = overlay_dirs(m)
                if upper:
                    yield upper, ApplyOptions(overlay_whiteouts=True, parents=lowers)
                    return
            elif m.type == "bind":
                if m.is_read_only():
                    raise InvalidArgumentError(f"cannot apply a layer to the read-only bind of {m.source!r}")
                yield m.source, ApplyOptions()
                return
        async with temp_mount(mounts, mounter=self.mounter, root=self.tmp_root) as root:
            yield root, ApplyOptions()

    async def _extract(
        self, source: Callable[[], bytes], compression: mediatypes.Compression, root: str, opts: ApplyOptions
    ) -> tuple[LayerReader, ApplyStats]:
        cancel = threading.Event()
        opts.cancel = cancel  # polled between entries

        def work() -> tuple[LayerReader, ApplyStats]:
            reader = LayerReader(source, compression)
            stats = apply_tar(root, reader, opts)
            reader.drain()
            return reader, stats

        return await to_thread_interruptible(work, cancel.set)

    # ------------------------------------------------------------------ compare

    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        reference: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        media_type = media_type or mediatypes.OCI_LAYER_GZIP
        compression = mediatypes.layer_compression(media_type)
        if compression not in (mediatypes.Compression.GZIP, mediatypes.Compression.NONE):
            raise UnimplementedError(f"unsupported diff media type {media_type!r}")
        gzip = compression is mediatypes.Compression.GZIP
        new_ref = not reference
        ref = reference or _unique_ref()

        async with self._read_view(lower) as lroot, self._read_view(upper) as uroot:
            cw = await self.store.writer(ref)
            committed = False
            try:
                if not new_ref:
                    await cw.truncate(0)
                loop = asyncio.get_running_loop()

                def sink(chunk: bytes) -> None:
                    asyncio.run_coroutine_threadsafe(cw.write(chunk), loop).result()

                def work() -> str:
                    comp = Compressor(sink, gzip=gzip)
                    write_diff(comp, lroot, uroot)  # type: ignore[arg-type]
                    comp.close()
                    return comp.digest()

                diff_id = await to_thread_complete(work)
                all_labels = dict(labels or {})
                if gzip:
                    all_labels[UNCOMPRESSED_LABEL] = diff_id
                dgst = cw.digest()
                try:
                    await cw.commit(0, dgst, labels=all_labels)
                except AlreadyExistsError:
                    pass
                committed = True
            finally:
                if not committed:
                    await cw.close()
                    if new_ref:
                        with contextlib.suppress(Exception):
                            await self.store.abort(ref)

        info = await self.store.info(dgst)
        if gzip and UNCOMPRESSED_LABEL not in info.labels:
            info.labels = {**info.labels, UNCOMPRESSED_LABEL: diff_id}
            try:
                await self.store.update(info, [f"labels.{UNCOMPRESSED_LABEL}"])
            except FailedPreconditionError:
                log.debug("content store keeps no labels; %s not recorded for %s", UNCOMPRESSED_LABEL, dgst)
        return Descriptor(media_type, dgst, info.size)

    @contextlib.asynccontextmanager
    async def _read_view(self, mounts: Sequence[Mount]) -> AsyncIterator[str]:
        """A directory showing ``mounts`` read-only: a bind's source in place, else a temporary mount."""
        if not mounts:
            d = await asyncio.to_thread(tempfile.mkdtemp, prefix="arun-empty-", dir=self.tmp_root)
            try:
                yield d
            finally:
                await asyncio.shield(asyncio.to_thread(shutil.rmtree, d, True))
            return
        if len(mounts) == 1 and mounts[0].type == "bind" and not mounts[0].target:
            yield mounts[0].source
            return
        async with temp_mount(read_only(mounts), mounter=self.mounter, root=self.tmp_root) as d:
            yield d


def _source(ra: ReaderAt, loop: asyncio.AbstractEventLoop) -> Callable[[], bytes]:
    """Sequential chunks of ``ra`` for a worker thread: direct ``pread`` when the reader offers it."""
    offset = 0
    sync_read: Any = getattr(ra, "read_at_sync", None)

    def next_chunk() -> bytes:
        nonlocal offset
        if sync_read is not None:
            data: bytes = sync_read(offset, _READ_CHUNK)
        else:
            data = asyncio.run_coroutine_threadsafe(ra.read_at(offset, _READ_CHUNK), loop).result()
        offset += len(data)
        return data

    return next_chunk
