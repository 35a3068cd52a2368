"""The namespaced content store: a wrapper over the backend store (containerd
``metadata/content.go`` semantics).

The bytes live once in the backend (``blobs/sha256/<hex>``); a blob is
visible in a namespace only when this store has recorded it there, with that
namespace's labels. Ingests are recorded per namespace and map the client's
ref to a backend ref ``<ns>/<n>/<ref>``, so two namespaces can use the same
ref without meeting.

With the ``shared`` policy (containerd's default), opening a writer for a
digest the backend already holds records the ingest with that digest as its
expected content and writes nothing: the writer reports the whole size as
written, and its commit only records the blob in this namespace.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from arun import namespaces
from arun.api.containerd.events import content_pb2
from arun.core.content import ContentStore, Descriptor, Info, ReaderAt, Status, Writer, validate_digest
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from arun.labels import validate_all as validate_labels
from arun.metadata import leases
from arun.metadata.common import (
    Adaptor,
    Hooks,
    backend_key,
    check_map,
    clean_map,
    compile_filters,
    dump_map,
    load_map,
    next_sequence,
    to_datetime,
)
from arun.metadata.db import Database, Tx
from arun.metadata.namespaces import ensure
from arun.metadata.rwlock import RWLock

log = logging.getLogger(__name__)

# An ingest that no lease holds is kept this long by garbage collection.
INGEST_EXPIRY_NS = 24 * 3600 * 10**9
_COPY_CHUNK = 1 << 20


_SELECT = "SELECT digest, size, labels, created_at, updated_at FROM content"
_BY_KEY = f"{_SELECT} WHERE namespace = ? AND digest = ?"


def adapt_info(info: Info) -> Adaptor:
    def field(path: Sequence[str]) -> str | None:
        if not path:
            return None
        if path[0] == "digest":
            return info.digest
        if path[0] == "labels":
            return check_map(path[1:], info.labels)
        return None

    return field


def adapt_status(st: Status) -> Adaptor:
    def field(path: Sequence[str]) -> str | None:
        if path and path[0] == "ref":
            return st.ref
        return None

    return field


def _info(row: sqlite3.Row) -> Info:
    return Info(
        digest=row["digest"],
        size=row["size"],
        created_at=to_datetime(row["created_at"]),
        updated_at=to_datetime(row["updated_at"]),
        labels=load_map(row["labels"]),
    )


class SqlContentStore:
    """``core.content.ContentStore`` for the current namespace."""

    def __init__(
        self, db: Database, backend: ContentStore, hooks: Hooks | None = None, *, shared: bool = True
    ) -> None:
        self.db = db
        self.backend = backend
        self.hooks = hooks or Hooks()
        self.shared = shared
        # Held shared while a backend object is created ahead of its record; exclusive by GC.
        self.lock = RWLock()

    # ------------------------------------------------------------------ Manager

    async def _row(self, digest: str) -> sqlite3.Row:
        validate_digest(digest)
        ns = namespaces.required()
        row = await self.db.lookup(_BY_KEY, (ns, digest))
        if row is None:
            raise NotFoundError(f"content digest {digest}: not found")
        return row

    async def info(self, digest: str) -> Info:
        row = await self._row(digest)
        return _info(row)

    async def size(self, digest: str) -> int:
        """The size of a blob visible in this namespace (``info(digest).size``)."""
        row = await self._row(digest)
        size: int = row["size"]
        return size

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        validate_digest(info.digest)
        ns = namespaces.required()
        async with self.db.update() as tx:
            row = await tx.fetchone(_BY_KEY, (ns, info.digest))
            if row is None:
                raise NotFoundError(f"content digest {info.digest}: not found")
            updated = _info(row)
            if fieldpaths:
                for path in fieldpaths:
                    if path.startswith("labels."):
                        key = path.removeprefix("labels.")
                        updated.labels[key] = info.labels.get(key, "")
                    elif path == "labels":
                        updated.labels = dict(info.labels)
                    else:
                        raise InvalidArgumentError(
                            f"cannot update {path!r} field on content info {info.digest!r}"
                        )
            else:
                updated.labels = dict(info.labels)
            updated.labels = clean_map(updated.labels)
            validate_labels(updated.labels)
            now = time.time_ns()
            await tx.execute(
                "UPDATE content SET labels = ?, updated_at = ? WHERE namespace = ? AND digest = ?",
                (dump_map(updated.labels), now, ns, info.digest),
            )
            updated.updated_at = to_datetime(now)
            # Like containerd, a label change is a mutation, not a deletion: it does not
            # schedule a collection by itself.
            self.hooks.mutated(tx)
        return updated

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Blobs of this namespace matching any of ``filters``."""
        ns = namespaces.required()
        match = compile_filters(filters)
        async with self.db.view() as tx:
            rows = await tx.fetchall(
                f"{_SELECT} WHERE namespace = ? ORDER BY digest",
                (ns,),
            )
        for row in rows:
            info = _info(row)
            if match(adapt_info(info)):
                yield info

    async def delete(self, digest: str) -> None:
        validate_digest(digest)
        ns = namespaces.required()
        async with self.db.update() as tx:
            n = await tx.execute("DELETE FROM content WHERE namespace = ? AND digest = ?", (ns, digest))
            if n == 0:
                raise NotFoundError(f"content digest {digest}: not found")
            await leases.detach(tx, ns, leases.CONTENT, digest)
            self.hooks.publish(tx, ns, "/content/delete", content_pb2.ContentDelete(digest=digest))
            # The blob is garbage collection's to remove, if no namespace has it any more.
            self.hooks.backend_dirty_on_commit(tx, content=True)
            self.hooks.mutated(tx, dirty=True)

    # ------------------------------------------------------------------ Provider

    async def reader_at(self, desc: Descriptor) -> ReaderAt:
        await self.info(desc.digest)  # visible in this namespace?
        return await self.backend.reader_at(desc)

    # ------------------------------------------------------------------ IngestManager

    @contextlib.asynccontextmanager
    async def dirty_on_failure(self) -> AsyncIterator[None]:
        """Mark the backend dirty if the block fails: it may have opened an ingest or
        committed a blob that no record refers to (garbage collection removes those)."""
        try:
            yield
        except BaseException:
            self.hooks.backend_dirty(content=True)
            raise

    async def _backend_ref(self, tx: Tx, ns: str, ref: str) -> sqlite3.Row | None:
        return await tx.fetchone(
            "SELECT backend_ref, expected, created_at FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref)
        )

    async def status(self, ref: str) -> Status:
        ns = namespaces.required()
        async with self.db.view() as tx:
            row = await self._backend_ref(tx, ns, ref)
        if row is None:
            raise NotFoundError(f"reference {ref}: not found")
        if row["expected"]:
            return await self._shared_status(ref, row)
        st = await self.backend.status(row["backend_ref"])
        st.ref = ref
        return st

    async def _shared_status(self, ref: str, row: sqlite3.Row) -> Status:
        try:
            st = await self.backend.status(row["backend_ref"])
            st.ref = ref
            return st
        except NotFoundError:
            pass
        info = await self.backend.info(row["expected"])
        started = to_datetime(row["created_at"])
        return Status(ref, info.size, info.size, started, started, row["expected"])

    async def list_statuses(self, *filters: str) -> list[Status]:
        ns = namespaces.required()
        match = compile_filters(filters)
        async with self.db.view() as tx:
            rows = await tx.fetchall(
                "SELECT ref, backend_ref, expected, created_at FROM ingests WHERE namespace = ? ORDER BY ref",
                (ns,),
            )
        out = []
        for row in rows:
            try:
                if row["expected"]:
                    st = await self._shared_status(row["ref"], row)
                else:
                    st = await self.backend.status(row["backend_ref"])
            except NotFoundError:
                continue
            st.ref = row["ref"]
            if match(adapt_status(st)):
                out.append(st)
        return out

    async def abort(self, ref: str) -> None:
        ns = namespaces.required()
        async with self.lock.shared(), self.db.update() as tx:
            row = await self._backend_ref(tx, ns, ref)
            if row is None:
                raise NotFoundError(f"reference {ref}: not found")
            await tx.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
            await leases.detach(tx, ns, leases.INGESTS, ref)
            try:
                await self.backend.abort(row["backend_ref"])
            except NotFoundError:
                if not row["expected"]:
                    log.debug("ingest %r had no backend data to abort", ref)
            self.hooks.mutated(tx)

    # ------------------------------------------------------------------ Ingester

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> Writer:
        if not ref:
            raise InvalidArgumentError("ref must not be empty")
        if total < 0:
            raise InvalidArgumentError(f"invalid total size {total}")
        if expected:
            validate_digest(expected)
        ns = namespaces.required()
        exists = False
        backend_writer: Writer | None = None
        shared_size = 0
        async with self.lock.shared(), self.dirty_on_failure():
            async with self.db.update() as tx:
                await ensure(tx, ns)
                shared = False
                if expected:
                    if await tx.fetchone(
                        "SELECT 1 FROM content WHERE namespace = ? AND digest = ?", (ns, expected)
                    ):
                        # Already here: lease it (the caller is about to use it) and report it exists.
                        await leases.attach(tx, ns, leases.CONTENT, expected)
                        exists = True
                    elif self.shared:
                        try:
                            binfo = await self.backend.info(expected)
                        except NotFoundError:
                            pass
                        else:
                            if total in (0, binfo.size):
                                shared = True
                                shared_size = binfo.size
                if not exists:
                    row = await self._backend_ref(tx, ns, ref)
                    leased = await leases.attach(tx, ns, leases.INGESTS, ref)
                    expires = None if leased else time.time_ns() + INGEST_EXPIRY_NS
                    now = time.time_ns()
                    if row is None:
                        bref = backend_key(ns, await next_sequence(tx, "content"), ref)
                        await tx.execute(
                            "INSERT INTO ingests (namespace, ref, backend_ref, expected, created_at, "
                            "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                            (ns, ref, bref, expected if shared else "", now, expires),
                        )
                    else:
                        bref = row["backend_ref"]
                        await tx.execute(
                            "UPDATE ingests SET expected = ?, expires_at = ? WHERE namespace = ? AND ref = ?",
                            (expected if shared else "", expires, ns, ref),
                        )
                    if not shared:
                        backend_writer = await self.backend.writer(bref, total=total)
                    self.hooks.mutated(tx)
        if exists:
            raise AlreadyExistsError(f"content {expected}: already exists")
        desc = Descriptor("", expected, shared_size if backend_writer is None else total)
        return NamespacedWriter(self, ns, ref, bref, backend_writer, desc)


class NamespacedWriter:
    """A writer whose commit records the blob in its namespace (and its lease)."""

    def __init__(
        self,
        store: SqlContentStore,
        namespace: str,
        ref: str,
        bref: str,
        w: Writer | None,
        desc: Descriptor,
    ) -> None:
        self._store = store
        self._ns = namespace
        self._ref = ref
        self._bref = bref
        # None while a shared blob stands in for the data (nothing written yet).
        self._w = w
        self._desc = desc
        self._started = datetime.now(UTC)

    @property
    def ref(self) -> str:
        return self._ref

    async def _create_and_copy(self, size: int) -> Writer:
        """Start a real ingest holding the first ``size`` bytes of the shared blob."""
        w = await self._store.backend.writer(self._bref)
        try:
            await w.truncate(0)
            if size > 0:
                ra = await self._store.backend.reader_at(self._desc)
                try:
                    offset = 0
                    while offset < size:
                        chunk = await ra.read_at(offset, min(_COPY_CHUNK, size - offset))
                        if not chunk:
                            raise FailedPreconditionError(
                                f"shared blob {self._desc.digest} is shorter than {size}"
                            )
                        await w.write(chunk)
                        offset += len(chunk)
                finally:
                    await ra.close()
        except BaseException:
            await w.close()
            raise
        self._w = w
        return w

    async def write(self, data: bytes) -> int:
        w = self._w
        if w is None:
            if not data:
                return 0
            w = await self._create_and_copy(self._desc.size)
        return await w.write(data)

    def digest(self) -> str:
        return self._w.digest() if self._w is not None else self._desc.digest

    async def status(self) -> Status:
        if self._w is not None:
            st = await self._w.status()
            st.ref = self._ref
            return st
        size = self._desc.size
        return Status(self._ref, size, size, self._started, self._started, self._desc.digest)

    async def truncate(self, size: int) -> None:
        if self._w is not None:
            await self._w.truncate(size)
            return
        await self._create_and_copy(size)

    async def close(self) -> None:
        if self._w is not None:
            await self._w.close()

    async def commit(self, size: int, expected: str = "", *, labels: Mapping[str, str] | None = None) -> None:
        base = clean_map(labels)
        try:
            validate_labels(base)
        except InvalidArgumentError:
            await self.close()
            raise
        store = self._store
        ns = self._ns
        already = False
        with namespaces.use(ns):
            async with store.lock.shared(), store.dirty_on_failure(), store.db.update() as tx:
                if self._w is None:
                    if size and size != self._desc.size:
                        raise FailedPreconditionError(
                            f"{self._ref!r} failed size validation: {self._desc.size} != {size}"
                        )
                    if expected and expected != self._desc.digest:
                        raise FailedPreconditionError(f"{self._ref!r} unexpected digest")
                    size = self._desc.size
                    actual = self._desc.digest
                else:
                    st = await self._w.status()
                    if size and size != st.offset:
                        await self._w.close()
                        raise FailedPreconditionError(
                            f"{self._ref!r} failed size validation: {st.offset} != {size}"
                        )
                    size = st.offset
                    actual = self._w.digest()
                    try:
                        await self._w.commit(size, expected)
                    except AlreadyExistsError:
                        pass  # in the backend already (another namespace): record it here
                now = time.time_ns()
                if await tx.fetchone(
                    "SELECT 1 FROM content WHERE namespace = ? AND digest = ?", (ns, actual)
                ):
                    already = True
                else:
                    await tx.execute(
                        "INSERT INTO content (namespace, digest, size, labels, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (ns, actual, size, dump_map(base), now, now),
                    )
                await tx.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, self._ref))
                await leases.detach(tx, ns, leases.INGESTS, self._ref)
                await leases.attach(tx, ns, leases.CONTENT, actual)
                if not already:
                    store.hooks.publish(
                        tx, ns, "/content/create", content_pb2.ContentCreate(digest=actual, size=size)
                    )
                store.hooks.mutated(tx)
        if already:
            raise AlreadyExistsError(f"content {actual}: already exists")


async def garbage_collect(store: SqlContentStore) -> tuple[int, int]:
    """Delete backend blobs and ingests that no namespace records; returns (blobs, ingests).

    Runs under the store's exclusive lock: no writer is between creating a
    backend object and recording it.
    """
    blobs = ingests = 0
    async with store.lock.exclusive():
        async with store.db.view() as tx:
            seen = {r["digest"] for r in await tx.fetchall("SELECT DISTINCT digest FROM content")}
            rows = await tx.fetchall("SELECT backend_ref, expected FROM ingests")
        seen.update(r["expected"] for r in rows if r["expected"])
        refs = {r["backend_ref"] for r in rows}
        async for info in store.backend.walk():
            if info.digest not in seen:
                try:
                    await store.backend.delete(info.digest)
                    blobs += 1
                    log.debug("removed content %s", info.digest)
                except NotFoundError:
                    pass
        for st in await store.backend.list_statuses():
            if st.ref not in refs:
                try:
                    await store.backend.abort(st.ref)
                    ingests += 1
                    log.debug("aborted unreferenced ingest %r", st.ref)
                except NotFoundError:
                    pass
        # A backend may also know leftovers no listing shows (an ingest interrupted
        # before its ref was written): let it drop them.
        if isinstance(store.backend, Cleaner):
            await store.backend.cleanup()
    return blobs, ingests


@runtime_checkable
class Cleaner(Protocol):
    """Optional for a backend content store: remove its own unlisted leftovers."""

    async def cleanup(self) -> None: ...
