"""End to end on overlayfs: layers unpacked onto overlay snapshots (whiteouts in overlay form) give
the right merged tree, and diffing two overlay snapshots gives a layer that recreates it natively."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from arun.content.local import LocalStore, MemoryLabelStore
from arun.core.diff import UNCOMPRESSED_LABEL
from arun.diff.walking import WalkingDiff
from arun.mount import temp_mount
from arun.snapshots.native import NativeSnapshotter
from arun.snapshots.overlay import OverlaySnapshotter
from arun.testing.layers import Entry, put_layer, tar_bytes
from arun.testing.suites.snapshotter import snapshot_tree

LAYERS = [
    [
        Entry("etc/", "dir", mode=0o755),
        Entry("etc/os-release", data=b"ID=test\n"),
        Entry("etc/old.conf", data=b"old"),
        Entry("usr/lib/libx.so", data=b"lib" * 100),
        Entry("usr/share/doc/a", data=b"a"),
        Entry("usr/share/doc/b", data=b"b"),
        Entry("bin", "symlink", linkname="usr/bin"),
        Entry("usr/bin/tool", data=b"#!tool", mode=0o755),
    ],
    [
        Entry("etc/.wh.old.conf"),
        Entry("etc/new.conf", data=b"new"),
        Entry("usr/share/doc/.wh..wh..opq"),
        Entry("usr/share/doc/c", data=b"c"),
        Entry("usr/bin/tool", data=b"#!tool v2", mode=0o755),
        Entry("usr/bin/other", "hardlink", linkname="usr/bin/tool", mode=0o755),
    ],
    [
        Entry(".wh.bin"),
        Entry("bin/", "dir"),
        Entry("bin/sh", data=b"sh"),
    ],
]

EXPECTED = {
    "etc",
    "etc/os-release",
    "etc/new.conf",
    "usr",
    "usr/lib",
    "usr/lib/libx.so",
    "usr/share",
    "usr/share/doc",
    "usr/share/doc/c",
    "usr/bin",
    "usr/bin/tool",
    "usr/bin/other",
    "bin",
    "bin/sh",
}


@pytest.mark.overlay
async def test_unpack_then_diff_on_overlay(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "content", MemoryLabelStore())
    differ = WalkingDiff(store, tmp_root=str(tmp_path))
    ov = await OverlaySnapshotter.create(tmp_path / "overlay")
    native = await NativeSnapshotter.create(tmp_path / "native")
    try:
        parent = ""
        descs = []
        for i, layer in enumerate(LAYERS):
            desc, diff_id = await put_layer(store, tar_bytes(layer), "zstd" if i == 1 else "gzip")
            descs.append(desc)
            mounts = await ov.prepare(f"extract-{i}", parent)
            applied = await differ.apply(desc, mounts)
            assert applied.digest == diff_id
            await ov.commit(f"layer-{i}", f"extract-{i}")
            parent = f"layer-{i}"

        async with temp_mount(await ov.view("final", parent), root=str(tmp_path)) as d:
            tree = snapshot_tree(d)
        assert set(tree) == EXPECTED, set(tree) ^ EXPECTED
        assert tree["usr/bin/tool"][2] == "#!tool v2"
        assert tree["bin"][0] == "dir"

        # Diff of the whole stack against nothing, then against layer-0, applied natively.
        lower = await ov.view("lower", "layer-0")
        upper = await ov.view("upper", parent)
        full = await differ.compare([], upper)
        delta = await differ.compare(lower, upper)
        assert UNCOMPRESSED_LABEL in (await store.info(delta.digest)).labels

        await native.prepare("n-full")
        await differ.apply(full, await native.mounts("n-full"))
        n_tree = snapshot_tree(str(native.snapshots_dir) + "/1")
        assert n_tree == tree

        await native.prepare("n0")
        await differ.apply(descs[0], await native.mounts("n0"))
        await native.commit("n-layer-0", "n0")
        mounts = await native.prepare("n1", "n-layer-0")
        await differ.apply(delta, mounts)
        assert snapshot_tree(mounts[0].source) == tree
    finally:
        with contextlib.suppress(Exception):
            await ov.close()
        await native.close()
