"""The snapshotter contract suite on native (no root) and overlayfs (root + overlay)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from arun.core.mount import Mount
from arun.mount import temp_mount
from arun.snapshots.native import NativeSnapshotter
from arun.snapshots.overlay import OverlaySnapshotter
from arun.testing.suites import snapshotter as suite


def _real_mount(work: Path) -> suite.MountFn:
    def fn(mounts: Sequence[Mount]) -> contextlib.AbstractAsyncContextManager[str]:
        return temp_mount(mounts, root=str(work))

    return fn


async def _run(check: suite.Check, ctx: suite.SuiteContext) -> None:
    try:
        await check(ctx)
    finally:
        await ctx.snapshotter.close()


@pytest.mark.parametrize("check", list(suite.CHECKS.values()), ids=list(suite.CHECKS))
async def test_native(check: suite.Check, tmp_path: Path) -> None:
    root = tmp_path / "native"
    ctx = suite.SuiteContext(
        await NativeSnapshotter.create(root),
        tmp_path,
        suite.direct_binds,
        reopen=lambda: NativeSnapshotter.create(root),
        root=root,
    )
    await _run(check, ctx)


@pytest.mark.root
@pytest.mark.parametrize("check", list(suite.MOUNT_CHECKS.values()), ids=list(suite.MOUNT_CHECKS))
async def test_native_mounted(check: suite.Check, tmp_path: Path) -> None:
    root = tmp_path / "native"
    ctx = suite.SuiteContext(await NativeSnapshotter.create(root), tmp_path, _real_mount(tmp_path), root=root)
    await _run(check, ctx)


@pytest.mark.overlay
@pytest.mark.parametrize(
    "check",
    list(suite.CHECKS.values()) + list(suite.MOUNT_CHECKS.values()),
    ids=list(suite.CHECKS) + list(suite.MOUNT_CHECKS),
)
async def test_overlay(check: suite.Check, tmp_path: Path) -> None:
    root = tmp_path / "overlay"
    ctx = suite.SuiteContext(
        await OverlaySnapshotter.create(root),
        tmp_path,
        _real_mount(tmp_path),
        reopen=lambda: OverlaySnapshotter.create(root),
        root=root,
    )
    await _run(check, ctx)


@contextlib.asynccontextmanager
async def _noop(mounts: Sequence[Mount]) -> AsyncIterator[str]:
    raise AssertionError("not used")
    yield ""
