"""Registration of the daemon's pull/push path: ``io.containerd.transfer.v1.local``.

Its instance is a ``LocalTransfer`` over the metadata layer (namespaced content, images,
leases and snapshotters) and the diff service; the transfer gRPC service and the CRI
plugin use it. Config: ``[plugins."io.containerd.transfer.v1.local"]`` with containerd's
keys (``max_concurrent_downloads``, ``config_path``, ``unpack_config`` …) and
``stall_timeout``.
"""

from __future__ import annotations

from typing import Any

from arun import leasectx
from arun.core.images import Image
from arun.errdefs import NotFoundError
from arun.plugin import InitContext, PluginType, register
from arun.transfer.local import LocalTransfer, TransferConfig
from arun.transfer.stores import Stores

# The diff service's plugin id (arun.services.DIFF_SERVICE; services sit above this layer).
_DIFF_SERVICE = "diff-service"


@register(
    PluginType.TRANSFER,
    "local",
    requires=(PluginType.METADATA, PluginType.SERVICE, PluginType.DIFF),
    config=TransferConfig,
)
async def init(ic: InitContext) -> LocalTransfer:
    cfg: TransferConfig = ic.config
    # The metadata plugin's Metadata (a sibling package: reached through the plugin set).
    meta: Any = ic.get_single(PluginType.METADATA)
    try:
        applier: Any = ic.get_by_id(PluginType.SERVICE, _DIFF_SERVICE)
    except NotFoundError:
        applier = None

    def make_image(name: str, target: Any, labels: dict[str, str]) -> Image:
        return Image(name=name, target=target, labels=dict(labels))

    def stores_for(snapshotter: str) -> Stores:
        try:
            sn: Any = meta.snapshotter(snapshotter)
        except NotFoundError:
            sn = None
        return Stores(
            content=meta.content_store(),
            images=meta.images,
            make_image=make_image,
            leases=meta.leases,
            lease_context=leasectx.use,
            snapshotter=sn,
            snapshotter_name=snapshotter,
            applier=applier,
        )

    transfer = LocalTransfer(cfg, stores_for)
    ic.meta.exports["config_path"] = cfg.config_path
    ic.meta.exports["max_concurrent_downloads"] = str(cfg.max_concurrent_downloads)
    return transfer
