"""Registration of the walking differ: ``io.containerd.differ.v1.walking``.

It reads layers through the metadata layer's content store (namespaced, so a
pull in ``k8s.io`` applies only blobs that namespace can see), as containerd's
walking differ is given the metadata content store.
"""

from __future__ import annotations

from typing import Any

from arun.diff.walking import WalkingDiff
from arun.plugin import InitContext, PluginType, register


@register(PluginType.DIFF, "walking", requires=(PluginType.METADATA,))
async def init(ic: InitContext) -> WalkingDiff:
    meta: Any = ic.get_single(PluginType.METADATA)
    ic.meta.platforms.append("linux")
    return WalkingDiff(meta.content_store(), tmp_root=str(ic.state) if ic.state else None)
