"""Registration of the native snapshotter: ``io.containerd.snapshotter.v1.native``."""

from __future__ import annotations

from dataclasses import dataclass

from arun.plugin import InitContext, PluginType, register
from arun.snapshots.native import NativeSnapshotter


@dataclass
class NativeConfig:
    # Where snapshots live (default: the plugin's root directory).
    root_path: str = ""


@register(PluginType.SNAPSHOT, "native", config=NativeConfig)
async def init(ic: InitContext) -> NativeSnapshotter:
    cfg: NativeConfig = ic.config
    root = cfg.root_path or str(ic.root)
    ic.meta.exports["root"] = root
    return await NativeSnapshotter.create(root)
