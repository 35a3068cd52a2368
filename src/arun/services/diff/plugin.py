"""Registrations of diff: ``io.containerd.service.v1.diff-service`` and ``io.containerd.grpc.v1.diff``."""

from __future__ import annotations

from arun.errdefs import FailedPreconditionError
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services import DIFF_SERVICE
from arun.services.diff.grpc import DiffServicer
from arun.services.diff.local import DiffConfig, DiffLocal


@register(PluginType.SERVICE, DIFF_SERVICE, requires=(PluginType.DIFF,), config=DiffConfig)
async def init_local(ic: InitContext) -> DiffLocal:
    cfg: DiffConfig = ic.config
    loaded = ic.get_all(PluginType.DIFF)
    ordered = []
    for name in cfg.default:
        if name not in loaded:
            raise FailedPreconditionError(f"needed differ not loaded: {name}")
        ordered.append(loaded[name])
    return DiffLocal(ordered)


@register(PluginType.GRPC, "diff", requires=(PluginType.SERVICE,))
async def init_grpc(ic: InitContext) -> Servicers:
    local: DiffLocal = ic.get_by_id(PluginType.SERVICE, DIFF_SERVICE)
    return Servicers(DiffServicer(local))
