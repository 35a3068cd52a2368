"""RemoveImage: every name of the image; an image that is not there is success."""

from __future__ import annotations

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.images import service
from arun.errdefs import InvalidArgumentError


async def remove_image(c: CRIService, req: api_pb2.RemoveImageRequest) -> api_pb2.RemoveImageResponse:
    if not req.image.image:
        raise InvalidArgumentError("image reference must not be empty")
    await service.remove(c, req.image.image)
    return api_pb2.RemoveImageResponse()
