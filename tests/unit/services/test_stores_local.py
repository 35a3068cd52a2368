"""The local services over the stores: what they add (sync GC, random lease ids, reads in chunks,
snapshotter lookup, differ order)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from arun import namespaces
from arun.content.local import LocalStore
from arun.core.content import Descriptor, digest_bytes
from arun.core.images import Image
from arun.core.mount import Mount
from arun.errdefs import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    UnimplementedError,
)
from arun.metadata.db import Database
from arun.metadata.meta import Metadata
from arun.services.content.local import ContentLocal
from arun.services.diff.local import DiffLocal
from arun.services.images.local import ImagesLocal
from arun.services.leases.local import LeasesLocal, random_id
from arun.services.snapshots.local import SnapshotsLocal
from arun.testing.snapshotter import MemorySnapshotter


@pytest.fixture
async def meta(tmp_path: Path) -> AsyncIterator[Metadata]:
    db = Database(tmp_path / "meta.db")
    await db.open()
    m = Metadata(db, content=LocalStore(tmp_path / "content"), snapshotters={"mem": MemorySnapshotter()})
    with namespaces.use("svc"):
        yield m
    await db.close()


async def test_images_delete_sync_collects(meta: Metadata) -> None:
    calls: list[int] = []

    async def collect() -> None:
        calls.append(1)

    images = ImagesLocal(meta.images, collect)
    target = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "a" * 64, 10)
    await images.create(Image("a", target))
    await images.create(Image("b", target))
    await images.delete("a")
    assert calls == []
    await images.delete("b", sync=True)
    assert calls == [1]
    with pytest.raises(NotFoundError):
        await images.delete("b", sync=True)
    assert calls == [1]


async def test_leases_random_ids_and_sync(meta: Metadata) -> None:
    calls: list[int] = []

    async def collect() -> None:
        calls.append(1)

    leases = LeasesLocal(meta.leases, collect)
    a = await leases.create()
    b = await leases.create("", {"x": "y"})
    assert a.id != b.id and re.fullmatch(r"\d+-[A-Za-z0-9_=-]{4}", a.id)
    assert random_id() != random_id()
    await leases.delete(a.id, sync=True)
    assert calls == [1]
    assert [x.id for x in await leases.list()] == [b.id]


async def test_content_read_ranges(meta: Metadata) -> None:
    local = ContentLocal(meta.content_store())
    data = bytes(range(256)) * 10_000
    dgst = digest_bytes(data)
    w = await local.writer("r", total=len(data))
    await w.write(data)
    await w.commit(len(data), dgst)

    async def read(offset: int, size: int) -> tuple[list[int], bytes]:
        chunks = [c async for c in local.read(dgst, offset, size)]
        return [o for o, _ in chunks], b"".join(d for _, d in chunks)

    offsets, got = await read(0, 0)
    assert got == data and offsets[0] == 0 and len(offsets) == 3  # 1 MiB chunks
    assert (await read(100, 50))[1] == data[100:150]
    assert (await read(len(data) - 5, 100))[1] == data[-5:]
    assert (await read(-3, 2))[1] == data[:2]
    assert (await read(len(data), 0))[1] == b""
    with pytest.raises(OutOfRangeError):
        await read(len(data) + 1, 0)
    with namespaces.use("elsewhere"), pytest.raises(NotFoundError):
        await read(0, 0)
    with pytest.raises(NotFoundError):
        _ = [c async for c in local.read(digest_bytes(b"never written"))]


async def test_content_read_servicer_validates_before_sending(meta: Metadata) -> None:
    from arun.api.containerd.services.content.v1 import content_pb2
    from arun.services.content.grpc import ContentServicer

    class Stream:
        def __init__(self, req: object) -> None:
            self.req = req
            self.sent: list[content_pb2.ReadContentResponse] = []

        async def recv_message(self) -> object:
            return self.req

        async def send_message(self, msg: content_pb2.ReadContentResponse) -> None:
            self.sent.append(msg)

    local = ContentLocal(meta.content_store())
    data = b"small blob"
    dgst = digest_bytes(data)
    w = await local.writer("r", total=len(data))
    await w.write(data)
    await w.commit(len(data), dgst)
    servicer = ContentServicer(local)
    for bad, error in (("sha256:XYZ", InvalidArgumentError), ("", InvalidArgumentError)):
        stream = Stream(content_pb2.ReadContentRequest(digest=bad))
        with pytest.raises(error):
            await servicer.Read(stream)
        assert stream.sent == []
    stream = Stream(content_pb2.ReadContentRequest(digest=dgst))
    await servicer.Read(stream)
    assert [(m.offset, m.data) for m in stream.sent] == [(0, data)]  # a small blob: one message
    with namespaces.use("elsewhere"):
        stream = Stream(content_pb2.ReadContentRequest(digest=dgst))
        with pytest.raises(NotFoundError):
            await servicer.Read(stream)
        assert stream.sent == []


def test_snapshotter_lookup(meta: Metadata) -> None:
    local = SnapshotsLocal(meta.snapshotters, default="mem")
    assert local.get("mem") is meta.snapshotter("mem")
    assert local.names() == ["mem"]
    with pytest.raises(InvalidArgumentError, match="missing"):
        local.get("")
    with pytest.raises(InvalidArgumentError, match="not loaded"):
        local.get("zfs")
    assert local.lookup("") is meta.snapshotter("mem")
    with pytest.raises(NotFoundError):
        local.lookup("zfs")


class FakeDiffer:
    def __init__(self, name: str, media_types: set[str]) -> None:
        self.name = name
        self.media_types = media_types

    async def apply(self, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        if desc.media_type not in self.media_types:
            raise UnimplementedError(f"{self.name}: {desc.media_type}")
        return Descriptor("applied-by-" + self.name, desc.digest, desc.size)

    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        reference: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        if media_type not in self.media_types:
            raise UnimplementedError(f"{self.name}: {media_type}")
        return Descriptor(media_type, "sha256:" + "b" * 64, 1, {"by": self.name})


async def test_differs_in_order() -> None:
    local = DiffLocal([FakeDiffer("one", {"x"}), FakeDiffer("two", {"x", "y"})])
    d = Descriptor("x", "sha256:" + "c" * 64, 3)
    assert (await local.apply(d, [])).media_type == "applied-by-one"
    assert (await local.apply(Descriptor("y", d.digest, 3), [])).media_type == "applied-by-two"
    with pytest.raises(UnimplementedError):
        await local.apply(Descriptor("z", d.digest, 3), [])
    assert (await local.diff([], [], media_type="y")).annotations == {"by": "two"}
    with pytest.raises(FailedPreconditionError):
        DiffLocal([])
