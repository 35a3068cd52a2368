"""The Images servicer."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from arun.api.containerd.services.images.v1 import images_grpc, images_pb2
from arun.core.images import Image
from arun.errdefs import InvalidArgumentError
from arun.services import convert
from arun.services.images.local import ImagesLocal


def to_pb(img: Image) -> images_pb2.Image:
    return images_pb2.Image(
        name=img.name,
        labels=img.labels,
        target=convert.descriptor_to_pb(img.target),
        created_at=convert.timestamp(img.created_at),
        updated_at=convert.timestamp(img.updated_at),
    )


def from_pb(img: images_pb2.Image) -> Image:
    return Image(name=img.name, target=convert.descriptor_from_pb(img.target), labels=dict(img.labels))


class ImagesServicer(images_grpc.ImagesBase):
    def __init__(self, local: ImagesLocal) -> None:
        self.local = local

    async def Get(self, stream: Any) -> None:
        req = await stream.recv_message()
        img = await self.local.get(req.name)
        await stream.send_message(images_pb2.GetImageResponse(image=to_pb(img)))

    async def List(self, stream: Any) -> None:
        req = await stream.recv_message()
        found = await self.local.list(*req.filters)
        await stream.send_message(images_pb2.ListImagesResponse(images=[to_pb(i) for i in found]))

    async def Create(self, stream: Any) -> None:
        req = await stream.recv_message()
        if not req.image.name:
            raise InvalidArgumentError("Image.Name required")
        img = await self.local.create(from_pb(req.image))
        await stream.send_message(images_pb2.CreateImageResponse(image=to_pb(img)))

    async def Update(self, stream: Any) -> None:
        req = await stream.recv_message()
        if not req.image.name:
            raise InvalidArgumentError("Image.Name required")
        img = await self.local.update(from_pb(req.image), *convert.field_paths(req))
        await stream.send_message(images_pb2.UpdateImageResponse(image=to_pb(img)))

    async def Delete(self, stream: Any) -> None:
        req = await stream.recv_message()
        target = convert.descriptor_from_pb(req.target) if req.HasField("target") else None
        await self.local.delete(req.name, sync=req.sync, target=target)
        await stream.send_message(empty_pb2.Empty())
