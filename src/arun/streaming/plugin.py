"""Registration of the stream manager (``io.containerd.streaming.v1.manager``, as containerd names it)."""

from __future__ import annotations

from arun.plugin import InitContext, PluginType, register
from arun.streaming.manager import StreamManager


@register(PluginType.STREAMING, "manager")
async def init(ic: InitContext) -> StreamManager:
    return StreamManager()
