"""Registration of the events exchange (``io.containerd.event.v1.exchange``)."""

from __future__ import annotations

from arun.events.exchange import Exchange
from arun.plugin import InitContext, PluginType, register


@register(PluginType.EVENT, "exchange")
async def init(ic: InitContext) -> Exchange:
    return Exchange()
