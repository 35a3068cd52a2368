"""Registration of the Transfer service (``io.containerd.grpc.v1.transfer``)."""

from __future__ import annotations

from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services.transfer.grpc import TransferServicer
from arun.streaming.manager import StreamManager
from arun.transfer.local import LocalTransfer


@register(PluginType.GRPC, "transfer", requires=(PluginType.TRANSFER, PluginType.STREAMING))
async def init(ic: InitContext) -> Servicers:
    transfer: LocalTransfer = ic.get_by_id(PluginType.TRANSFER, "local")
    streams: StreamManager = ic.get_by_id(PluginType.STREAMING, "manager")
    return Servicers(TransferServicer(transfer, streams))
