"""Overlay mount specs and metadata behaviour that need no mounting (and so no root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arun.core.mount import Mount
from arun.core.snapshots import Kind
from arun.errdefs import FailedPreconditionError, NotFoundError
from arun.snapshots.overlay import UPPERDIR_LABEL, OverlaySnapshotter


async def _make(tmp_path: Path, **kw: bool) -> OverlaySnapshotter:
    return await OverlaySnapshotter.create(tmp_path / "ov", check=False, **kw)


async def _commit_chain(sn: OverlaySnapshotter, n: int) -> list[str]:
    parent = ""
    names = []
    for i in range(n):
        await sn.prepare(f"a{i}", parent)
        await sn.commit(f"c{i}", f"a{i}")
        parent = f"c{i}"
        names.append(parent)
    return names


async def test_mount_shapes(tmp_path: Path) -> None:
    sn = await _make(tmp_path)
    try:
        snap = sn.snapshots_dir
        idx = ("index=off",) if sn.index_off else ()
        # No parent: a bind of the snapshot's own fs.
        assert await sn.prepare("top") == [Mount("bind", f"{snap}/1/fs", ("rw", "rbind"))]
        assert await sn.view("v0") == [Mount("bind", f"{snap}/2/fs", ("ro", "rbind"))]
        await sn.remove("top")
        await sn.remove("v0")
        await _commit_chain(sn, 3)  # ids 3, 4, 5
        # Active on a chain: overlay, nearest parent first.
        m = await sn.prepare("work", "c2")
        assert m == [
            Mount(
                "overlay",
                "overlay",
                (
                    *idx,
                    f"workdir={snap}/6/work",
                    f"upperdir={snap}/6/fs",
                    f"lowerdir={snap}/5/fs:{snap}/4/fs:{snap}/3/fs",
                ),
            )
        ]
        assert os.path.isdir(f"{snap}/6/work") and os.path.isdir(f"{snap}/6/fs")
        # A view of a single parent: read-only bind of that parent.
        assert await sn.view("v1", "c0") == [Mount("bind", f"{snap}/3/fs", ("ro", "rbind"))]
        assert not os.path.exists(f"{snap}/7/work"), "views have no work dir"
        # A view of two or more: overlay with lowerdirs only.
        assert await sn.view("v2", "c1") == [
            Mount("overlay", "overlay", (*idx, f"lowerdir={snap}/4/fs:{snap}/3/fs"))
        ]
        assert await sn.mounts("work") == m
        with pytest.raises(FailedPreconditionError):
            await sn.mounts("c1")
    finally:
        await sn.close()


async def test_upperdir_label(tmp_path: Path) -> None:
    sn = await _make(tmp_path, upperdir_label=True)
    try:
        await sn.prepare("a", labels={"x": "y"})
        info = await sn.stat("a")
        assert info.labels == {"x": "y", UPPERDIR_LABEL: f"{sn.snapshots_dir}/1/fs"}
        walked = [i async for i in sn.walk()]
        assert walked[0].labels[UPPERDIR_LABEL] == f"{sn.snapshots_dir}/1/fs"
    finally:
        await sn.close()


async def test_remove_deletes_directory_and_async_remove_defers(tmp_path: Path) -> None:
    sn = await _make(tmp_path)
    try:
        await sn.prepare("a")
        assert os.path.isdir(f"{sn.snapshots_dir}/1")
        await sn.remove("a")
        assert os.listdir(sn.snapshots_dir) == []
    finally:
        await sn.close()
    sn = await OverlaySnapshotter.create(tmp_path / "ov2", check=False, async_remove=True)
    try:
        await sn.prepare("a")
        await sn.remove("a")
        assert os.listdir(sn.snapshots_dir) == ["1"]
        await sn.cleanup()
        assert os.listdir(sn.snapshots_dir) == []
    finally:
        await sn.close()


async def test_child_upper_takes_parent_owner(tmp_path: Path) -> None:
    sn = await _make(tmp_path)
    try:
        await sn.prepare("a")
        if os.geteuid() == 0:
            os.chown(f"{sn.snapshots_dir}/1/fs", 1234, 5678)
        await sn.commit("c", "a")
        await sn.prepare("b", "c")
        st = os.stat(f"{sn.snapshots_dir}/2/fs")
        want = (1234, 5678) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
        assert (st.st_uid, st.st_gid) == want
        assert (await sn.stat("b")).kind == Kind.ACTIVE
    finally:
        await sn.close()


async def test_failed_prepare_leaves_nothing(tmp_path: Path) -> None:
    sn = await _make(tmp_path)
    try:
        with pytest.raises(NotFoundError):
            await sn.prepare("x", "missing")
        assert os.listdir(sn.snapshots_dir) == []
        assert [i async for i in sn.walk()] == []
    finally:
        await sn.close()
