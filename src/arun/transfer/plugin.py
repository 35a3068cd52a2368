"""Registration of the local transfer service: ``io.containerd.transfer.v1.local``.

The ``LocalTransfer`` is the daemon's one pull/push path: the Transfer gRPC service and
the CRI plugin's PullImage both use it. Its stores are the metadata layer's, per
snapshotter: content, images and leases of the current namespace, the namespaced
snapshotter, and the walking differ to unpack with.
"""

from __future__ import annotations

from typing import Any

from arun import leasectx
from arun.core.images import Image
from arun.errdefs import NotFoundError
from arun.plugin import InitContext, PluginType, register
from arun.transfer.local import LocalTransfer, TransferConfig
from arun.transfer.stores import Stores


@register(
    PluginType.TRANSFER,
    "local",
    requires=(PluginType.METADATA, PluginType.DIFF),
    config=TransferConfig,
)
async def init(ic: InitContext) -> LocalTransfer:
    cfg: TransferConfig = ic.config
    meta: Any = ic.get_single(PluginType.METADATA)
    differs = ic.get_all(PluginType.DIFF)
    applier = differs.get("walking") or next(iter(differs.values()), None)

    def stores_for(snapshotter: str) -> Stores:
        try:
            sn = meta.snapshotter(snapshotter) if snapshotter else None
        except NotFoundError:
            sn = None
        return Stores(
            content=meta.content_store(),
            images=meta.images,
            make_image=lambda name, target, labels: Image(name, target, dict(labels)),
            leases=meta.leases,
            lease_context=leasectx.use,
            snapshotter=sn,
            snapshotter_name=snapshotter,
            applier=applier,
        )

    return LocalTransfer(cfg, stores_for)
