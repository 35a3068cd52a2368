"""Registrations of namespaces: the local service (``io.containerd.service.v1.namespaces-service``)
and its gRPC servicer (``io.containerd.grpc.v1.namespaces``)."""

from __future__ import annotations

import logging

from arun.errdefs import NotFoundError
from arun.metadata.meta import Metadata
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services import NAMESPACES_SERVICE
from arun.services.namespaces.grpc import NamespacesServicer
from arun.services.namespaces.local import NamespacesLocal, Publisher

log = logging.getLogger(__name__)


def _publisher(ic: InitContext) -> Publisher | None:
    try:
        exchange = ic.get_single(PluginType.EVENT)
    except NotFoundError:
        log.info("no event exchange loaded: namespace events are not published")
        return None
    publish = getattr(exchange, "publish", None)
    if publish is None:
        raise TypeError(f"event plugin {type(exchange).__name__} has no publish(topic, event)")
    result: Publisher = exchange
    return result


@register(PluginType.SERVICE, NAMESPACES_SERVICE, requires=(PluginType.EVENT, PluginType.METADATA))
async def init_local(ic: InitContext) -> NamespacesLocal:
    meta: Metadata = ic.get_single(PluginType.METADATA)
    return NamespacesLocal(meta.db, _publisher(ic))


@register(PluginType.GRPC, "namespaces", requires=(PluginType.SERVICE,))
async def init_grpc(ic: InitContext) -> Servicers:
    local: NamespacesLocal = ic.get_by_id(PluginType.SERVICE, NAMESPACES_SERVICE)
    return Servicers(NamespacesServicer(local))
