"""Writers of the local content store, and the on-disk helpers they share with it.

A writer holds an in-process lock on its ingest directory (containerd's
``locks.go``): a second writer on the same ref gets UnavailableError until the
first closes or commits. Data is appended through aiofiles; hash updates of
large chunks run in a thread (hashlib releases the GIL), alongside the write.

Commit is crash-safe: the data is fsynced, hard-linked into ``blobs/`` (same
filesystem; atomic, and unlike rename it refuses an existing target) and the
directory fsynced before the ingest is removed. A crash before the link leaves
a resumable ingest; after it, a complete blob and a stale ingest directory
that a later writer on the ref or an abort clears.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiofiles

from arun.core.content import Status, digest_of
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
)

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

    from arun.content.local.store import LocalStore

log = logging.getLogger(__name__)

__all__ = ["LocalWriter", "format_timestamp", "parse_timestamp"]

THREAD_THRESHOLD = 64 * 1024


# ---------------------------------------------------------------- timestamps


def format_timestamp(ns: int) -> str:
    """RFC 3339 with nanoseconds and trailing zeros trimmed, UTC ("Z"): Go's ``time.MarshalText``."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


def parse_timestamp(text: str) -> datetime:
    """Parse what ``format_timestamp`` (or Go) wrote; sub-microsecond digits are dropped."""
    m = _TS_RE.match(text.strip())
    if m is None:
        raise ValueError(f"invalid timestamp {text!r}")
    frac = (m.group(2) or "").ljust(6, "0")[:6]
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}").astimezone(UTC)


def from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


# ---------------------------------------------------------------- ingest locks

# One open writer per ingest directory in this process (containerd's ``locks``).
_locks: dict[str, float] = {}


def lock(key: str, ref: str) -> None:
    since = _locks.get(key)
    if since is not None:
        raise UnavailableError(f"ref {ref!r} locked for {time.time() - since:.3f}s")
    _locks[key] = time.time()


def locked(key: str) -> bool:
    return key in _locks


def unlock(key: str) -> None:
    _locks.pop(key, None)


def write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


class LocalWriter:
    """An open ingest of a ``LocalStore`` (get one from ``LocalStore.writer``)."""

    def __init__(self, store: LocalStore, ref: str, path: str, status: Status, h: Hash) -> None:
        self._store = store
        self._ref = ref
        self._path = path
        self._status = status
        self._h = h
        self._f: Any = None  # aiofiles' unbuffered file, open until commit/close
        self._lock = asyncio.Lock()

    @property
    def ref(self) -> str:
        return self._ref

    async def open(self) -> None:
        self._f = await aiofiles.open(os.path.join(self._path, "data"), "ab", buffering=0)

    def _check_open(self) -> None:
        if self._f is None:
            raise FailedPreconditionError(f"writer of ref {self._ref!r} is closed")

    async def write(self, data: bytes) -> int:
        async with self._lock:
            self._check_open()
            n = len(data)
            if n == 0:
                return 0
            view = memoryview(data)
            if n >= THREAD_THRESHOLD:
                await asyncio.gather(self._write_all(view), asyncio.to_thread(self._h.update, view))
            else:
                self._h.update(view)
                await self._write_all(view)
            self._status.offset += n
            self._status.updated_at = datetime.now(UTC)
            return n

    async def _write_all(self, view: memoryview) -> None:
        while view:
            written = await self._f.write(view)
            view = view[written:]

    def digest(self) -> str:
        return digest_of(self._h)

    async def status(self) -> Status:
        s = self._status
        return Status(s.ref, s.offset, s.total, s.started_at, s.updated_at, s.expected)

    async def truncate(self, size: int) -> None:
        if size != 0:
            raise InvalidArgumentError(f"truncate to {size}: only truncating to 0 is supported")
        async with self._lock:
            self._check_open()
            await self._f.truncate(0)
            self._h = hashlib.new(self._h.name)
            self._status.offset = 0

    async def commit(self, size: int, expected: str = "", *, labels: Mapping[str, str] | None = None) -> None:
        async with self._lock:
            self._check_open()
            f, self._f = self._f, None
            try:
                dgst = await asyncio.to_thread(self._commit, f.fileno(), size, expected)
            finally:
                try:
                    await f.close()
                finally:
                    unlock(self._path)
            labels_store = self._store._labels
            if labels_store is not None and labels:
                labels_store.set(dgst, labels)

    def _commit(self, fd: int, size: int, expected: str) -> str:
        os.fsync(fd)
        actual = os.fstat(fd).st_size
        if size > 0 and size != actual:
            raise FailedPreconditionError(
                f"unexpected commit size {actual}, expected {size} (ref {self._ref!r})"
            )
        dgst = digest_of(self._h)
        if expected and expected != dgst:
            raise FailedPreconditionError(
                f"unexpected commit digest {dgst}, expected {expected} (ref {self._ref!r})"
            )
        target = self._store.blob_path(dgst)
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        # link(2) fails if the target exists, so two racing commits of the same
        # content cannot both succeed (a rename would silently replace).
        try:
            os.link(os.path.join(self._path, "data"), target)
        except FileExistsError:
            shutil.rmtree(self._path, ignore_errors=True)
            raise AlreadyExistsError(f"content {dgst!r}: already exists") from None
        fsync_dir(os.path.dirname(target))
        # From here on the blob is in the store; the rest is best effort.
        now = time.time_ns()
        try:
            os.utime(target, ns=(now, now))
            mode = os.stat(target).st_mode & 0o777
            os.chmod(target, mode & ~0o333)
        except OSError as e:
            log.warning("could not finish committing %s: %s", dgst, e)
        shutil.rmtree(self._path, ignore_errors=True)
        return dgst

    async def close(self) -> None:
        """Close, keeping the ingest for a later resume."""
        async with self._lock:
            if self._f is None:
                return
            f, self._f = self._f, None
            try:
                await asyncio.to_thread(os.fsync, f.fileno())
                await f.close()
                ts = format_timestamp(int(self._status.updated_at.timestamp() * 1e9))
                await asyncio.to_thread(write_atomic, os.path.join(self._path, "updatedat"), ts.encode())
            except FileNotFoundError:
                pass  # aborted meanwhile
            finally:
                unlock(self._path)
