"""The Version servicer."""

from __future__ import annotations

from typing import Any

from arun.api.containerd.services.version.v1 import version_grpc, version_pb2
from arun.version import VERSION, revision


class VersionServicer(version_grpc.VersionBase):
    async def Version(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(version_pb2.VersionResponse(version=VERSION, revision=revision()))
