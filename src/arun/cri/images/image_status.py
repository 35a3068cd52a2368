"""ImageStatus: the image a reference or id resolves to (none: an empty response, not an error),
with containerd's verbose info (the image spec and chain id)."""

from __future__ import annotations

import json

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.errdefs import InvalidArgumentError


async def image_status(c: CRIService, req: api_pb2.ImageStatusRequest) -> api_pb2.ImageStatusResponse:
    if not req.image.image:
        raise InvalidArgumentError("image reference must not be empty")
    img = await c.images.resolve(req.image.image)
    if img is None:
        return api_pb2.ImageStatusResponse()
    resp = api_pb2.ImageStatusResponse(image=img.to_proto())
    if req.verbose:
        info = {"chainID": img.details.chain_id, "imageSpec": img.details.config}
        resp.info["info"] = json.dumps(info)
    return resp
