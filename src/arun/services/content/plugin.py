"""Registrations of content: ``io.containerd.service.v1.content-service`` and
``io.containerd.grpc.v1.content``."""

from __future__ import annotations

from arun.metadata.meta import Metadata
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services import CONTENT_SERVICE
from arun.services.content.grpc import ContentServicer
from arun.services.content.local import ContentLocal


@register(PluginType.SERVICE, CONTENT_SERVICE, requires=(PluginType.METADATA,))
async def init_local(ic: InitContext) -> ContentLocal:
    meta: Metadata = ic.get_single(PluginType.METADATA)
    return ContentLocal(meta.content_store())


@register(PluginType.GRPC, "content", requires=(PluginType.SERVICE,))
async def init_grpc(ic: InitContext) -> Servicers:
    local: ContentLocal = ic.get_by_id(PluginType.SERVICE, CONTENT_SERVICE)
    return Servicers(ContentServicer(local))
