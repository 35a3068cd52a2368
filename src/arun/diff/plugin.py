"""Registration of the walking differ: ``io.containerd.differ.v1.walking``.

As in containerd, the differ reads and writes layers through the *metadata*
content store, so Apply sees only the blobs of the request's namespace and a
Diff's new layer is recorded in that namespace (and its lease).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from arun.core.content import ContentStore
from arun.diff.walking import WalkingDiff
from arun.plugin import InitContext, PluginType, register


class _Metadata(Protocol):
    """What the differ needs of the metadata plugin (siblings never import each other)."""

    def content_store(self) -> ContentStore: ...


@register(PluginType.DIFF, "walking", requires=(PluginType.METADATA,))
async def init(ic: InitContext) -> WalkingDiff:
    meta: _Metadata = ic.get_single(PluginType.METADATA)
    # Temporary mount points live under the plugin's state directory, not in /tmp.
    await asyncio.to_thread(ic.state.mkdir, mode=0o700, parents=True, exist_ok=True)
    return WalkingDiff(meta.content_store(), tmp_root=str(ic.state))
