"""Registration of the overlayfs snapshotter: ``io.containerd.snapshotter.v1.overlayfs``.

Skipped (not failed) where overlayfs cannot be used: no root, no overlay
support, or a backing filesystem without d_type.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from arun.plugin import InitContext, PluginType, register
from arun.snapshots.overlay import OverlaySnapshotter


@dataclass
class OverlayConfig:
    # Where snapshots live (default: the plugin's root directory).
    root_path: str = ""
    # Add containerd.io/snapshot/overlay.upperdir to snapshot labels.
    upperdir_label: bool = False
    # Leave directories of removed snapshots for cleanup() (run by the garbage collector).
    async_remove: bool = False


@register(PluginType.SNAPSHOT, "overlayfs", config=OverlayConfig)
async def init(ic: InitContext) -> OverlaySnapshotter:
    cfg: OverlayConfig = ic.config
    root = cfg.root_path or str(ic.root)
    ic.meta.platforms.append(f"linux/{_arch()}")
    ic.meta.exports["root"] = root
    return await OverlaySnapshotter.create(
        root, upperdir_label=cfg.upperdir_label, async_remove=cfg.async_remove
    )


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)
