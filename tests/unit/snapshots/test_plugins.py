"""The content and snapshotter plugin registrations load through the plugin loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import arun.content.local.plugin
import arun.snapshots.native.plugin
import arun.snapshots.overlay.plugin  # noqa: F401 - registers
from arun.content.local import LocalStore
from arun.plugin import default, load
from arun.plugin.config import loads
from arun.snapshots.native import NativeSnapshotter
from arun.snapshots.overlay import OverlaySnapshotter


def _regs(*uris: str) -> list[object]:
    found = [r for r in default if r.uri in uris]
    assert len(found) == len(uris), [r.uri for r in default]
    return found


async def test_content_and_native(tmp_path: Path) -> None:
    cfg = loads(f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n')
    plugins = await load(
        _regs("io.containerd.content.v1.content", "io.containerd.snapshotter.v1.native"),
        cfg,  # type: ignore[arg-type]
    )
    try:
        cs = plugins.get("io.containerd.content.v1", "content")
        assert isinstance(cs, LocalStore) and cs.root == f"{tmp_path}/root/io.containerd.content.v1.content"
        sn = plugins.get("io.containerd.snapshotter.v1", "native")
        assert isinstance(sn, NativeSnapshotter)
        assert os.path.isfile(f"{tmp_path}/root/io.containerd.snapshotter.v1.native/metadata.db")
    finally:
        await plugins.close()


async def test_native_root_path_and_unknown_key(tmp_path: Path) -> None:
    cfg = loads(
        f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
        f'[plugins."io.containerd.snapshotter.v1.native"]\nroot_path = "{tmp_path}/elsewhere"\n'
    )
    plugins = await load(_regs("io.containerd.snapshotter.v1.native"), cfg)  # type: ignore[arg-type]
    try:
        sn = plugins.get("io.containerd.snapshotter.v1", "native")
        assert isinstance(sn, NativeSnapshotter) and sn.root == f"{tmp_path}/elsewhere"
    finally:
        await plugins.close()


@pytest.mark.overlay
async def test_overlay(tmp_path: Path) -> None:
    cfg = loads(f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n')
    plugins = await load(_regs("io.containerd.snapshotter.v1.overlayfs"), cfg)  # type: ignore[arg-type]
    try:
        sn = plugins.get("io.containerd.snapshotter.v1", "overlayfs")
        assert isinstance(sn, OverlaySnapshotter)
        assert not [n for n in os.listdir(sn.root) if n.startswith("overlay-check")]
    finally:
        await plugins.close()
