"""The local content store: containerd's on-disk layout under one root.

::

    <root>/blobs/<alg>/<hex>                    committed blobs, read-only files
    <root>/ingest/<sha256(ref)>/data            bytes written so far
                               /ref             the ref, verbatim
                               /startedat       RFC 3339 timestamps (Go's MarshalText form)
                               /updatedat
                               /total           expected size, when known

A committed blob's mtime is its creation time and its atime the last label
update, as in containerd. The store is namespace-unaware and keeps no labels
unless given a ``LabelStore`` (containerd's ``NewLabeledStore``); under the
daemon the metadata layer keeps labels and namespaces.

Large reads and hashing run in threads (``pread``; hashlib releases the GIL);
appends go through aiofiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from arun.asyncutil import to_thread_complete
from arun.content.local.writer import (
    LocalWriter,
    format_timestamp,
    from_ns,
    lock,
    locked,
    parse_timestamp,
    read_text,
    unlock,
    write_atomic,
)
from arun.core.content import (
    Descriptor,
    Info,
    Status,
    digest_string,
    hasher,
    parse_digest,
)
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

log = logging.getLogger(__name__)

__all__ = ["LabelStore", "LocalReaderAt", "LocalStore", "MemoryLabelStore"]

# Reads and hash updates of at least this size leave the event loop.
THREAD_THRESHOLD = 64 * 1024
_CHUNK = 1 << 20


class LabelStore(Protocol):
    """Labels per digest for a standalone store (containerd's ``local.LabelStore``)."""

    def get(self, digest: str) -> dict[str, str]: ...

    def set(self, digest: str, labels: Mapping[str, str]) -> None: ...

    def update(self, digest: str, labels: Mapping[str, str]) -> dict[str, str]:
        """Merge ``labels``; an empty value removes the key. Returns the result."""
        ...


class MemoryLabelStore:
    """An in-memory ``LabelStore`` (tests, standalone tools)."""

    def __init__(self) -> None:
        self._labels: dict[str, dict[str, str]] = {}

    def get(self, digest: str) -> dict[str, str]:
        return dict(self._labels.get(digest, {}))

    def set(self, digest: str, labels: Mapping[str, str]) -> None:
        self._labels[digest] = {k: v for k, v in labels.items() if v}

    def update(self, digest: str, labels: Mapping[str, str]) -> dict[str, str]:
        cur = self._labels.setdefault(digest, {})
        for k, v in labels.items():
            if v:
                cur[k] = v
            else:
                cur.pop(k, None)
        return dict(cur)


class LocalReaderAt:
    """A ``ReaderAt`` over one blob file (reads are ``pread``, off the loop when large)."""

    def __init__(self, fd: int, size: int, path: str) -> None:
        self._fd = fd
        self._size = size
        self.path = path

    @property
    def size(self) -> int:
        return self._size

    async def read_at(self, offset: int, n: int) -> bytes:
        if self._fd < 0:
            raise FailedPreconditionError("reader is closed")
        if offset < 0 or n < 0:
            raise InvalidArgumentError(f"invalid read of {n} bytes at offset {offset}")
        if offset >= self._size or n == 0:
            return b""
        n = min(n, self._size - offset)
        if n >= THREAD_THRESHOLD:
            return await asyncio.to_thread(os.pread, self._fd, n, offset)
        return os.pread(self._fd, n, offset)

    def read_at_sync(self, offset: int, n: int) -> bytes:
        """Blocking ``read_at`` for code already running in a worker thread."""
        if offset >= self._size or n <= 0:
            return b""
        return os.pread(self._fd, min(n, self._size - offset), offset)

    async def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)


class LocalStore:
    """``ContentStore`` on a local directory (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str], labels: LabelStore | None = None) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._labels = labels
        os.makedirs(os.path.join(self.root, "ingest"), exist_ok=True)

    # -------------------------------------------------------------- paths

    def blob_path(self, digest: str) -> str:
        alg, hex_ = parse_digest(digest)
        return os.path.join(self.root, "blobs", alg, hex_)

    def ingest_root(self, ref: str) -> str:
        # A digest of the ref keeps ingest paths short and free of separators.
        return os.path.join(self.root, "ingest", digest_string(ref).split(":", 1)[1])

    # -------------------------------------------------------------- Manager

    def _info(self, digest: str, st: os.stat_result, labels: dict[str, str]) -> Info:
        return Info(
            digest=digest,
            size=st.st_size,
            created_at=from_ns(st.st_mtime_ns),
            updated_at=from_ns(st.st_atime_ns),
            labels=labels,
        )

    async def info(self, digest: str) -> Info:
        path = self.blob_path(digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFoundError(f"content {digest!r}: not found") from None
        labels = self._labels.get(digest) if self._labels is not None else {}
        return self._info(digest, st, labels)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        if self._labels is None:
            raise FailedPreconditionError(
                "update not supported on an immutable content store (labels are kept by the metadata store)"
            )
        path = self.blob_path(info.digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFoundError(f"content {info.digest!r}: not found") from None
        replace_all = not fieldpaths
        partial: dict[str, str] = {}
        for fp in fieldpaths:
            if fp.startswith("labels."):
                key = fp[len("labels.") :]
                partial[key] = info.labels.get(key, "")
            elif fp == "labels":
                replace_all = True
            else:
                raise InvalidArgumentError(f"cannot update {fp!r} field on content info {info.digest!r}")
        if replace_all:
            self._labels.set(info.digest, info.labels)
            if partial:
                self._labels.update(info.digest, partial)
            labels = self._labels.get(info.digest)
        else:
            labels = self._labels.update(info.digest, partial)
        now = time.time_ns()
        try:
            os.utime(path, ns=(now, st.st_mtime_ns))
        except OSError as e:
            log.warning("could not change access time of %s: %s", info.digest, e)
        return Info(info.digest, st.st_size, from_ns(st.st_mtime_ns), from_ns(now), labels)

    async def walk(self) -> AsyncIterator[Info]:
        blobs = os.path.join(self.root, "blobs")

        def scan() -> list[tuple[str, os.stat_result]]:
            found: list[tuple[str, os.stat_result]] = []
            try:
                algs = sorted(os.listdir(blobs))
            except FileNotFoundError:
                return found
            for alg in algs:
                d = os.path.join(blobs, alg)
                try:
                    entries = list(os.scandir(d))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                for e in entries:
                    dgst = f"{alg}:{e.name}"
                    try:
                        parse_digest(dgst)
                        st = e.stat(follow_symlinks=False)
                    except InvalidArgumentError:
                        log.error("invalid digest for blob path %s", e.path)
                        continue
                    except FileNotFoundError:
                        continue  # deleted meanwhile
                    found.append((dgst, st))
            return found

        for dgst, st in await asyncio.to_thread(scan):
            labels = self._labels.get(dgst) if self._labels is not None else {}
            yield self._info(dgst, st, labels)

    async def delete(self, digest: str) -> None:
        path = self.blob_path(digest)
        try:
            os.remove(path)
        except FileNotFoundError:
            raise NotFoundError(f"content {digest!r}: not found") from None
        if self._labels is not None:
            self._labels.set(digest, {})

    # -------------------------------------------------------------- Provider

    async def reader_at(self, desc: Descriptor) -> LocalReaderAt:
        path = self.blob_path(desc.digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"content {desc.digest!r}: not found") from None
        try:
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        return LocalReaderAt(fd, size, path)

    # -------------------------------------------------------------- IngestManager

    def _status_of(self, ingest: str) -> Status:
        """Read an ingest's status from disk; NotFoundError if it is not a (complete) ingest."""
        try:
            st = os.stat(os.path.join(ingest, "data"))
            ref = read_text(os.path.join(ingest, "ref"))
            started = parse_timestamp(read_text(os.path.join(ingest, "startedat")))
            updated = parse_timestamp(read_text(os.path.join(ingest, "updatedat")))
        except FileNotFoundError as e:
            raise NotFoundError(f"ingest {os.path.basename(ingest)!r}: {e.strerror}: {e.filename}") from None
        except ValueError as e:
            raise FailedPreconditionError(f"ingest {os.path.basename(ingest)!r} is corrupt: {e}") from e
        # updatedat is written on close only; the data file may be newer.
        mtime = from_ns(st.st_mtime_ns)
        if mtime > updated:
            updated = mtime
        total = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            total = int(read_text(os.path.join(ingest, "total")))
        return Status(ref=ref, offset=st.st_size, total=total, started_at=started, updated_at=updated)

    async def status(self, ref: str) -> Status:
        if not ref:
            raise InvalidArgumentError("ref must not be empty")
        st = self._status_of(self.ingest_root(ref))
        if st.ref != ref:
            raise NotFoundError(f"ingest ref {ref!r}: not found")
        return st

    async def list_statuses(self) -> list[Status]:
        ingest = os.path.join(self.root, "ingest")

        def scan() -> list[Status]:
            out: list[Status] = []
            for name in sorted(os.listdir(ingest)):
                if name.endswith(".tmp"):
                    continue
                try:
                    out.append(self._status_of(os.path.join(ingest, name)))
                except NotFoundError:
                    continue  # committed or aborted while listing
                except FailedPreconditionError as e:
                    log.warning("skipping corrupt ingest %s: %s", name, e)
            return out

        return await asyncio.to_thread(scan)

    async def cleanup(self) -> int:
        """Remove ingest directories no listing can show: an ingest interrupted (by a crash)
        before its ref and data were written. Ingests held by a writer are left alone.
        Returns how many were removed."""
        ingest = os.path.join(self.root, "ingest")

        def scan() -> int:
            removed = 0
            try:
                names = sorted(os.listdir(ingest))
            except FileNotFoundError:
                return 0
            for name in names:
                path = os.path.join(ingest, name)
                if name.endswith(".tmp") or locked(path) or not os.path.isdir(path):
                    continue
                try:
                    self._status_of(path)
                except NotFoundError:
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
                    log.info("removed incomplete ingest directory %s", name)
                except FailedPreconditionError:
                    continue  # corrupt but complete enough to list: abort() is the way out
            return removed

        return await asyncio.to_thread(scan)

    async def abort(self, ref: str) -> None:
        if not ref:
            raise InvalidArgumentError("ref must not be empty")
        path = self.ingest_root(ref)
        try:
            await asyncio.to_thread(shutil.rmtree, path)
        except FileNotFoundError:
            raise NotFoundError(f"ingest ref {ref!r}: not found") from None

    # -------------------------------------------------------------- Ingester

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> LocalWriter:
        if not ref:
            raise InvalidArgumentError("ref must not be empty")
        if total < 0:
            raise InvalidArgumentError(f"invalid total size {total}")
        if expected:
            parse_digest(expected)
        path = self.ingest_root(ref)
        # Like containerd, retry a held lock briefly (backing off) before giving up.
        for attempt in range(6):
            try:
                lock(path, ref)
                break
            except UnavailableError:
                if attempt == 5:
                    raise
                await asyncio.sleep(0.001 * (1 << attempt))
        try:
            return await self._open_writer(ref, path, total, expected)
        except BaseException:
            unlock(path)
            raise

    async def _open_writer(self, ref: str, path: str, total: int, expected: str) -> LocalWriter:
        exists = bool(expected) and await asyncio.to_thread(os.path.exists, self.blob_path(expected))
        if exists:
            raise AlreadyExistsError(f"content {expected!r}: already exists")

        def open_ingest() -> tuple[Status, Hash]:
            h = hasher()
            try:
                os.mkdir(path, 0o755)
                fresh = True
            except FileExistsError:
                fresh = False
            status: Status | None = None
            if not fresh:
                try:
                    status = self._status_of(path)
                    if status.ref != ref:
                        # A collision of sha256(ref) or a corrupt layout: never mix data.
                        raise FailedPreconditionError(f"ingest of ref {ref!r} holds ref {status.ref!r}")
                    if total > 0 and status.total > 0 and total != status.total:
                        raise FailedPreconditionError(
                            f"ref {ref!r}: provided total {total} differs from the ingest's {status.total}"
                        )
                except NotFoundError:
                    log.info("ingest of ref %r is incomplete; starting it again", ref)
                    status = None
            data = os.path.join(path, "data")
            if status is None:
                now = time.time_ns()
                write_atomic(os.path.join(path, "ref"), ref.encode())
                write_atomic(os.path.join(path, "startedat"), format_timestamp(now).encode())
                write_atomic(os.path.join(path, "updatedat"), format_timestamp(now).encode())
                if total > 0:
                    write_atomic(os.path.join(path, "total"), str(total).encode())
                fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                os.close(fd)
                status = Status(ref, 0, total, from_ns(now), from_ns(now))
            else:
                # Resume: re-hash what is there to restore the digest state.
                offset = 0
                with open(data, "rb", buffering=0) as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        offset += len(chunk)
                status.offset = offset
                if total > 0 and status.total == 0:
                    status.total = total
                    write_atomic(os.path.join(path, "total"), str(total).encode())
            return status, h

        status, h = await to_thread_complete(open_ingest)
        w = LocalWriter(self, ref, path, status, h)
        await w.open()
        return w
