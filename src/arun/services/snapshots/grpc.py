"""The Snapshots servicer."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from arun.api.containerd.services.snapshots.v1 import snapshots_grpc, snapshots_pb2
from arun.core.snapshots import Info, Kind
from arun.errdefs import UnimplementedError
from arun.services import convert
from arun.services.snapshots.local import SnapshotsLocal

LIST_BATCH = 100


def info_to_pb(info: Info) -> snapshots_pb2.Info:
    return snapshots_pb2.Info(
        name=info.name,
        parent=info.parent,
        kind=snapshots_pb2.Kind.ValueType(int(info.kind)),
        created_at=convert.timestamp(info.created),
        updated_at=convert.timestamp(info.updated),
        labels=info.labels,
    )


def info_from_pb(info: snapshots_pb2.Info) -> Info:
    return Info(name=info.name, kind=Kind(info.kind), parent=info.parent, labels=dict(info.labels))


class SnapshotsServicer(snapshots_grpc.SnapshotsBase):
    def __init__(self, local: SnapshotsLocal) -> None:
        self.local = local

    async def Prepare(self, stream: Any) -> None:
        req = await stream.recv_message()
        sn = self.local.get(req.snapshotter)
        mounts = await sn.prepare(req.key, req.parent, labels=dict(req.labels))
        await stream.send_message(snapshots_pb2.PrepareSnapshotResponse(mounts=convert.mounts_to_pb(mounts)))

    async def View(self, stream: Any) -> None:
        req = await stream.recv_message()
        sn = self.local.get(req.snapshotter)
        mounts = await sn.view(req.key, req.parent, labels=dict(req.labels))
        await stream.send_message(snapshots_pb2.ViewSnapshotResponse(mounts=convert.mounts_to_pb(mounts)))

    async def Mounts(self, stream: Any) -> None:
        req = await stream.recv_message()
        mounts = await self.local.get(req.snapshotter).mounts(req.key)
        await stream.send_message(snapshots_pb2.MountsResponse(mounts=convert.mounts_to_pb(mounts)))

    async def Commit(self, stream: Any) -> None:
        req = await stream.recv_message()
        sn = self.local.get(req.snapshotter)
        if req.parent and (await sn.stat(req.key)).parent != req.parent:
            raise UnimplementedError("committing a snapshot onto a different parent is not supported")
        await sn.commit(req.name, req.key, labels=dict(req.labels))
        await stream.send_message(empty_pb2.Empty())

    async def Remove(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.local.get(req.snapshotter).remove(req.key)
        await stream.send_message(empty_pb2.Empty())

    async def Stat(self, stream: Any) -> None:
        req = await stream.recv_message()
        info = await self.local.get(req.snapshotter).stat(req.key)
        await stream.send_message(snapshots_pb2.StatSnapshotResponse(info=info_to_pb(info)))

    async def Update(self, stream: Any) -> None:
        req = await stream.recv_message()
        sn = self.local.get(req.snapshotter)
        info = await sn.update(info_from_pb(req.info), convert.field_paths(req))
        await stream.send_message(snapshots_pb2.UpdateSnapshotResponse(info=info_to_pb(info)))

    async def List(self, stream: Any) -> None:
        req = await stream.recv_message()
        sn = self.local.get(req.snapshotter)
        batch: list[snapshots_pb2.Info] = []
        async for info in sn.walk(*req.filters):
            batch.append(info_to_pb(info))
            if len(batch) >= LIST_BATCH:
                await stream.send_message(snapshots_pb2.ListSnapshotsResponse(info=batch))
                batch = []
        if batch:
            await stream.send_message(snapshots_pb2.ListSnapshotsResponse(info=batch))

    async def Usage(self, stream: Any) -> None:
        req = await stream.recv_message()
        usage = await self.local.get(req.snapshotter).usage(req.key)
        await stream.send_message(snapshots_pb2.UsageResponse(size=usage.size, inodes=usage.inodes))

    async def Cleanup(self, stream: Any) -> None:
        req = await stream.recv_message()
        await self.local.get(req.snapshotter).cleanup()
        await stream.send_message(empty_pb2.Empty())
