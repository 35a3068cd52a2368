"""ListImages and StreamImages (filter: an image reference or id)."""

from __future__ import annotations

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService


async def images_matching(c: CRIService, f: api_pb2.ImageFilter | None) -> list[api_pb2.Image]:
    if f is not None and f.HasField("image") and f.image.image:
        one = await c.images.resolve(f.image.image)
        return [one.to_proto()] if one is not None else []
    return [i.to_proto() for i in await c.images.all()]


async def list_images(c: CRIService, req: api_pb2.ListImagesRequest) -> api_pb2.ListImagesResponse:
    f = req.filter if req.HasField("filter") else None
    return api_pb2.ListImagesResponse(images=await images_matching(c, f))
