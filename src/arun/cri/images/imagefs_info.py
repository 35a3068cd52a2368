"""ImageFsInfo: usage of the snapshotter's directory, for images and containers alike (they share it)."""

from __future__ import annotations

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.images import service


async def image_fs_info(c: CRIService, req: api_pb2.ImageFsInfoRequest) -> api_pb2.ImageFsInfoResponse:
    return await service.fs_info(c)
