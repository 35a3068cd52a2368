"""Registrations of images: ``io.containerd.service.v1.images-service`` and
``io.containerd.grpc.v1.images``."""

from __future__ import annotations

from arun.metadata.gc import Scheduler
from arun.metadata.meta import Metadata
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services import IMAGES_SERVICE
from arun.services.images.grpc import ImagesServicer
from arun.services.images.local import ImagesLocal


@register(PluginType.SERVICE, IMAGES_SERVICE, requires=(PluginType.METADATA, PluginType.GC))
async def init_local(ic: InitContext) -> ImagesLocal:
    meta: Metadata = ic.get_single(PluginType.METADATA)
    gc: Scheduler = ic.get_single(PluginType.GC)
    return ImagesLocal(meta.images, gc.schedule_and_wait)


@register(PluginType.GRPC, "images", requires=(PluginType.SERVICE,))
async def init_grpc(ic: InitContext) -> Servicers:
    local: ImagesLocal = ic.get_by_id(PluginType.SERVICE, IMAGES_SERVICE)
    return Servicers(ImagesServicer(local))
