"""Plugins a test daemon imports (``Daemon.start(imports=[...])``): one that skips, one that fails."""

from __future__ import annotations

from arun.plugin import InitContext, SkipPlugin, register

TYPE = "io.arun.test.v1"


@register(TYPE, "skipper")
async def init_skipper(ic: InitContext) -> object:
    raise SkipPlugin("no such hardware on this host")


@register(TYPE, "broken")
async def init_broken(ic: InitContext) -> object:
    raise RuntimeError("broken on purpose")
