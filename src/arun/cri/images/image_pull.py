"""PullImage: the image id of the pulled image (``sha256:<config digest>``)."""

from __future__ import annotations

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.images import service
from arun.errdefs import InvalidArgumentError


async def pull_image(c: CRIService, req: api_pb2.PullImageRequest) -> api_pb2.PullImageResponse:
    if not req.image.image:
        raise InvalidArgumentError("image reference must not be empty")
    auth = req.auth if req.HasField("auth") else None
    sn = ""
    handler = req.image.runtime_handler
    if handler:
        sn = c.snapshotter_for(handler)
    image_id = await service.pull(c, req.image.image, auth, snapshotter=sn)
    return api_pb2.PullImageResponse(image_ref=image_id)
