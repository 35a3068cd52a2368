"""Push: an image from the content store to a registry.

The image is walked from its target (index → manifests → config and layers); blobs go
first, ``max_concurrent_uploads`` at a time, then the manifests by digest, then the root
under the reference's tag — manifests last, so a registry never holds a manifest whose
blobs are missing. For each blob:

1. ``HEAD`` — already in the target repository: nothing to send;
2. cross-repository mount, when the blob's ``containerd.io/distribution.source.<registry>``
   label names another repository on the same registry (the one sharing the longest path
   prefix with the target is tried, as containerd does);
3. upload: one ``PUT`` (``chunk_size`` None) or ``PATCH`` chunks then ``PUT ?digest=``.

Afterwards the pushed blobs' source labels include the target repository, so a later push
elsewhere on the registry can mount from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from arun import errdefs, platforms
from arun.images import mediatypes as mt
from arun.images.manifest import Descriptor, parse_index, parse_manifest
from arun.remotes.client import RegistryClient
from arun.remotes.repository import Repository
from arun.transfer.progress import Phase, Progress, ProgressCallback
from arun.transfer.pull import LABEL_DISTRIBUTION_SOURCE
from arun.transfer.stores import Content

log = logging.getLogger(__name__)

__all__ = ["PushOptions", "PushResult", "push"]


@dataclass
class PushOptions:
    """``platforms``: push only these manifests of an index (None: all of them — they must
    all be in the content store). ``chunk_size``: None for monolithic uploads."""

    platforms: platforms.Matcher | None = None
    max_concurrent_uploads: int = 3
    chunk_size: int | None = None
    on_progress: ProgressCallback | None = None


@dataclass
class PushResult:
    target: Descriptor
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


_MOUNT_REFUSED = (errdefs.PermissionDeniedError, errdefs.UnauthenticatedError, errdefs.NotFoundError)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("/"), b.split("/"), strict=False):
        if x != y:
            break
        n += 1
    return n


class _Pusher:
    def __init__(self, client: RegistryClient, ref: str, content: Content, opts: PushOptions) -> None:
        self.repo: Repository = client.repository(ref)
        self.ref = ref
        self.content = content
        self.opts = opts
        self.result: PushResult | None = None
        self.source_key = f"{LABEL_DISTRIBUTION_SOURCE}.{self.repo.registry}"

    def emit(self, phase: Phase, desc: Descriptor, kind: str, **kw: Any) -> None:
        if self.opts.on_progress is None:
            return
        try:
            self.opts.on_progress(
                Progress(self.ref, phase, desc.digest, kind, desc.media_type, total=desc.size, **kw)
            )
        except Exception:
            log.exception("progress callback failed")

    async def read(self, desc: Descriptor) -> bytes:
        try:
            reader = await self.content.reader_at(desc)
        except errdefs.NotFoundError:
            raise errdefs.NotFoundError(
                f"cannot push {self.ref!r}: {desc.media_type} {desc.digest} is not in the content store"
            ) from None
        try:
            return await reader.read_at(0, desc.size)
        finally:
            await reader.close()

    async def chunks(self, desc: Descriptor) -> AsyncIterator[bytes]:
        reader = await self.content.reader_at(desc)
        try:
            off = 0
            while off < desc.size:
                data = await reader.read_at(off, min(1 << 20, desc.size - off))
                if not data:
                    raise errdefs.DataLossError(f"{desc.digest}: content ended at {off} of {desc.size} bytes")
                off += len(data)
                yield data
        finally:
            await reader.close()

    async def walk(self, target: Descriptor) -> tuple[list[Descriptor], list[tuple[Descriptor, bytes]]]:
        """(leaf blobs, manifests with their bytes in push order: children before parents)."""
        blobs: dict[str, Descriptor] = {}
        docs: list[tuple[Descriptor, bytes]] = []

        async def visit(desc: Descriptor, top: bool) -> None:
            body = await self.read(desc)
            if mt.is_index(desc.media_type):
                index = parse_index(body, desc.media_type, f"index {desc.digest}")
                children = list(index.manifests)
                if self.opts.platforms is not None:
                    children = index.select(self.opts.platforms, limit=None)
                for ch in children:
                    await visit(ch, False)
            elif mt.is_manifest(desc.media_type):
                m = parse_manifest(body, desc.media_type, f"manifest {desc.digest}")
                for ch in m.children():
                    info = await self._info(ch.digest)
                    if info is None:
                        raise errdefs.NotFoundError(
                            f"cannot push {self.ref!r}: {ch.media_type} {ch.digest} "
                            "is not in the content store"
                        )
                    blobs.setdefault(ch.digest, ch)
            else:
                raise errdefs.InvalidArgumentError(
                    f"cannot push {desc.digest}: media type {desc.media_type!r} is not a manifest or index"
                )
            docs.append((desc, body))

        await visit(target, True)
        return list(blobs.values()), docs

    async def _info(self, digest: str) -> Any | None:
        try:
            return await self.content.info(digest)
        except errdefs.NotFoundError:
            return None

    def _mount_candidate(self, info: Any) -> str:
        value = info.labels.get(self.source_key, "") if info is not None else ""
        best, score = "", -1
        for repo in (r for r in value.split(",") if r):
            if repo == self.repo.name:
                continue
            s = _common_prefix(repo, self.repo.name)
            if s >= score:
                best, score = repo, s
        return best

    async def push_blob(self, desc: Descriptor, kind: str, res: PushResult) -> None:
        if await self.repo.blob_exists(desc):
            res.existing.append(desc.digest)
            self.emit(Phase.EXISTS, desc, kind)
            return
        info = await self._info(desc.digest)
        source = self._mount_candidate(info)
        if source:
            try:
                if await self.repo.mount_blob(desc, source):
                    res.mounted.append(desc.digest)
                    self.emit(Phase.MOUNTED, desc, kind)
                    return
            except _MOUNT_REFUSED as exc:
                log.debug("mount of %s from %s failed (%s); uploading", desc.digest, source, exc)
        self.emit(Phase.UPLOADING, desc, kind, offset=0)

        def progress(sent: int) -> None:
            self.emit(Phase.UPLOADING, desc, kind, offset=sent)

        await self.repo.upload_blob(
            desc, lambda: self.chunks(desc), chunk_size=self.opts.chunk_size, on_progress=progress
        )
        res.uploaded.append(desc.digest)
        self.emit(Phase.UPLOADED, desc, kind, offset=desc.size)

    async def _label_source(self, digests: list[str]) -> None:
        for d in digests:
            info = await self._info(d)
            if info is None:
                continue
            repos = {r for r in info.labels.get(self.source_key, "").split(",") if r}
            if self.repo.name in repos:
                continue
            repos.add(self.repo.name)
            info.labels[self.source_key] = ",".join(sorted(repos))
            with contextlib.suppress(errdefs.ArunError):
                await self.content.update(info, [f"labels.{self.source_key}"])

    async def run(self, target: Descriptor) -> PushResult:
        res = PushResult(target)
        blobs, docs = await self.walk(target)
        sem = asyncio.Semaphore(max(1, self.opts.max_concurrent_uploads))

        async def one(d: Descriptor) -> None:
            async with sem:
                await self.push_blob(d, "config" if mt.is_known_config(d.media_type) else "layer", res)

        try:
            async with asyncio.TaskGroup() as tg:
                for d in blobs:
                    tg.create_task(one(d))
        except BaseExceptionGroup as eg:
            from arun.transfer.pull import _first_error

            raise _first_error(eg) from None
        tag = self.repo.spec.tag
        for desc, body in docs:
            is_root = desc.digest == target.digest
            kind = "index" if mt.is_index(desc.media_type) else "manifest"
            reference = tag if (is_root and tag) else desc.digest
            self.emit(Phase.UPLOADING, desc, kind, offset=0)
            await self.repo.put_manifest(reference, desc, body)
            res.uploaded.append(desc.digest)
            self.emit(Phase.UPLOADED, desc, kind, offset=desc.size)
        await self._label_source([d.digest for d in blobs] + [d.digest for d, _ in docs])
        self.emit(Phase.DONE, target, "image")
        return res


async def push(
    client: RegistryClient,
    ref: str,
    content: Content,
    target: Descriptor,
    options: PushOptions | None = None,
) -> PushResult:
    """Push the image whose root is ``target`` (an index or manifest in ``content``) to
    ``ref`` (``host/path:tag``). The caller has entered the namespace of ``content``."""
    return await _Pusher(client, ref, content, options or PushOptions()).run(target)
