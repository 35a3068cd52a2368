"""Registrations of introspection: the local service (``io.containerd.service.v1.introspection-service``)
and its gRPC servicer (``io.containerd.grpc.v1.introspection``)."""

from __future__ import annotations

from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services import INTROSPECTION_SERVICE
from arun.services.introspection.grpc import IntrospectionServicer
from arun.services.introspection.local import IntrospectionLocal


@register(PluginType.SERVICE, INTROSPECTION_SERVICE)
async def init_local(ic: InitContext) -> IntrospectionLocal:
    # The plugin set fills up while later plugins load; requests see all of them.
    return IntrospectionLocal(ic.plugins, ic.root)


@register(PluginType.GRPC, "introspection", requires=(PluginType.SERVICE,))
async def init_grpc(ic: InitContext) -> Servicers:
    local: IntrospectionLocal = ic.get_by_id(PluginType.SERVICE, INTROSPECTION_SERVICE)
    return Servicers(IntrospectionServicer(local))
