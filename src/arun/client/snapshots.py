"""One snapshotter, seen from the client (``containerd.services.snapshots.v1``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from arun.client import _convert
from arun.client.types import Mount, SnapshotInfo

if TYPE_CHECKING:
    from arun.client.client import Client

__all__ = ["Snapshots"]

_SERVICE = "/containerd.services.snapshots.v1.Snapshots/"


class Snapshots:
    """One snapshotter of the daemon (``Client.snapshots(name)``): prepare, view, commit, remove, list."""

    def __init__(self, client: Client, snapshotter: str) -> None:
        self._c = client
        self.name = snapshotter

    async def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """An active snapshot ``key`` on top of committed ``parent``; the mounts to use it."""
        from arun.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb

        r = await self._c._unary(
            _SERVICE + "Prepare",
            pb.PrepareSnapshotRequest(
                snapshotter=self.name, key=key, parent=parent, labels=dict(labels or {})
            ),
            pb.PrepareSnapshotResponse,
        )
        return [_convert.mount(m) for m in r.mounts]

    async def view(self, key: str, parent: str, labels: Mapping[str, str] | None = None) -> list[Mount]:
        """A read-only snapshot ``key`` on ``parent``; the mounts to see it."""
        from arun.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb

        r = await self._c._unary(
            _SERVICE + "View",
            pb.ViewSnapshotRequest(snapshotter=self.name, key=key, parent=parent, labels=dict(labels or {})),
            pb.ViewSnapshotResponse,
        )
        return [_convert.mount(m) for m in r.mounts]

    async def mounts(self, key: str) -> list[Mount]:
        """The mounts of active or view snapshot ``key``."""
        from arun.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb

        r = await self._c._unary(
            _SERVICE + "Mounts", pb.MountsRequest(snapshotter=self.name, key=key), pb.MountsResponse
        )
        return [_convert.mount(m) for m in r.mounts]

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Commit active snapshot ``key`` as the committed snapshot ``name``."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb

        await self._c._unary(
            _SERVICE + "Commit",
            pb.CommitSnapshotRequest(snapshotter=self.name, name=name, key=key, labels=dict(labels or {})),
            empty_pb2.Empty,
        )

    async def remove(self, key: str) -> None:
        """Remove snapshot ``key`` (it must have no children)."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb

        await self._c._unary(
            _SERVICE + "Remove", pb.RemoveSnapshotRequest(snapshotter=self.name, key=key), empty_pb2.Empty
        )

    async def stat(self, key: str) -> SnapshotInfo:
        """The record of snapshot ``key``."""
        from arun.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb

        r = await self._c._unary(
            _SERVICE + "Stat", pb.StatSnapshotRequest(snapshotter=self.name, key=key), pb.StatSnapshotResponse
        )
        return _convert.snapshot_info(r.info)

    async def list(self, *filters: str) -> list[SnapshotInfo]:
        """The records of every snapshot matching any of ``filters``."""
        from arun.api.containerd.services.snapshots.v1 import snapshots_pb2 as pb

        out: list[SnapshotInfo] = []
        req = pb.ListSnapshotsRequest(snapshotter=self.name, filters=list(filters))
        async with self._c._stream(_SERVICE + "List", req, pb.ListSnapshotsResponse) as msgs:
            async for m in msgs:
                out.extend(_convert.snapshot_info(i) for i in m.info)
        return out
