"""Registration of the local content store: ``io.containerd.content.v1.content``.

Its root is ``<root>/io.containerd.content.v1.content`` (containerd's layout). The metadata
plugin wraps it with namespaces and labels.
"""

from __future__ import annotations

import asyncio

from arun.content.local.store import LocalStore
from arun.plugin import InitContext, PluginType, register


@register(PluginType.CONTENT, "content")
async def init(ic: InitContext) -> LocalStore:
    ic.meta.exports["root"] = str(ic.root)
    return await asyncio.to_thread(LocalStore, ic.root)
