"""The Diff servicer."""

from __future__ import annotations

from typing import Any

from arun.api.containerd.services.diff.v1 import diff_grpc, diff_pb2
from arun.services import convert
from arun.services.diff.local import DiffLocal


class DiffServicer(diff_grpc.DiffBase):
    def __init__(self, local: DiffLocal) -> None:
        self.local = local

    async def Apply(self, stream: Any) -> None:
        req = await stream.recv_message()
        applied = await self.local.apply(
            convert.descriptor_from_pb(req.diff), convert.mounts_from_pb(req.mounts)
        )
        await stream.send_message(diff_pb2.ApplyResponse(applied=convert.descriptor_to_pb(applied)))

    async def Diff(self, stream: Any) -> None:
        req = await stream.recv_message()
        desc = await self.local.diff(
            convert.mounts_from_pb(req.left),
            convert.mounts_from_pb(req.right),
            media_type=req.media_type,
            reference=req.ref,
            labels=dict(req.labels) or None,
        )
        await stream.send_message(diff_pb2.DiffResponse(diff=convert.descriptor_to_pb(desc)))
