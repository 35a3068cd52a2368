"""Registration of the gRPC health service (``io.containerd.grpc.v1.healthcheck``).

Like containerd's, it reports SERVING for the whole server (service ``""``)
once the daemon serves; a named service answers NOT_FOUND.
"""

from __future__ import annotations

from grpclib.health.service import Health

from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers


@register(PluginType.GRPC, "healthcheck")
async def init(ic: InitContext) -> Servicers:
    return Servicers(Health())
