"""The Introspection servicer: Plugins, Server and PluginInfo over IntrospectionLocal."""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2

from arun.api.containerd.services.introspection.v1 import introspection_grpc, introspection_pb2
from arun.api.containerd.types import platform_pb2
from arun.api.google.rpc import status_pb2
from arun.services.introspection.local import IntrospectionLocal, PluginInfo


def platform_to_pb(text: str) -> platform_pb2.Platform:
    os_, _, rest = text.partition("/")
    arch, _, variant = rest.partition("/")
    return platform_pb2.Platform(os=os_, architecture=arch, variant=variant)


def plugin_to_pb(info: PluginInfo) -> introspection_pb2.Plugin:
    pb = introspection_pb2.Plugin(
        type=info.type,
        id=info.id,
        requires=list(info.requires),
        platforms=[platform_to_pb(p) for p in info.platforms],
        exports=info.exports,
        capabilities=list(info.capabilities),
    )
    if info.init_err is not None:
        pb.init_err.CopyFrom(status_pb2.Status(code=info.init_err.code, message=info.init_err.message))
    return pb


class IntrospectionServicer(introspection_grpc.IntrospectionBase):
    def __init__(self, local: IntrospectionLocal) -> None:
        self.local = local

    async def Plugins(self, stream: Any) -> None:
        req = await stream.recv_message()
        infos = self.local.plugins(list(req.filters))
        await stream.send_message(introspection_pb2.PluginsResponse(plugins=[plugin_to_pb(i) for i in infos]))

    async def Server(self, stream: Any) -> None:
        await stream.recv_message()
        s = await self.local.server()
        await stream.send_message(introspection_pb2.ServerResponse(uuid=s.uuid, pid=s.pid, pidns=s.pidns))

    async def PluginInfo(self, stream: Any) -> None:
        req = await stream.recv_message()
        options = req.options if req.HasField("options") else None
        info, extra = await self.local.plugin_info(req.type, req.id, options)
        resp = introspection_pb2.PluginInfoResponse(plugin=plugin_to_pb(info))
        if extra is not None:
            packed = any_pb2.Any()
            packed.Pack(extra)
            resp.extra.CopyFrom(packed)
        await stream.send_message(resp)
