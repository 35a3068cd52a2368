"""The libc mounter: option parsing (no root) and real mounts (root)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from arun.core.mount import Mount
from arun.mount import (
    MS_BIND,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    LinuxMounter,
    _compact_lowerdirs,
    is_mountpoint,
    parse_options,
    temp_mount,
)


def test_parse_options() -> None:
    assert parse_options(["rbind", "ro"]) == (MS_BIND | MS_REC | MS_RDONLY, "")
    assert parse_options(["ro", "rw", "nosuid", "nodev", "lowerdir=/a:/b", "index=off"]) == (
        MS_NOSUID | MS_NODEV,
        "lowerdir=/a:/b,index=off",
    )
    assert parse_options(["rprivate"]) == (MS_PRIVATE | MS_REC, "")


def test_compact_lowerdirs() -> None:
    opts = ["index=off", "lowerdir=/r/snapshots/10/fs:/r/snapshots/9/fs", "upperdir=/r/snapshots/11/fs"]
    chdir, out = _compact_lowerdirs(opts)
    assert chdir == "/r/snapshots/"
    assert out == ["index=off", "upperdir=/r/snapshots/11/fs", "lowerdir=10/fs:9/fs"]
    assert _compact_lowerdirs(["lowerdir=/a"]) == ("", ["lowerdir=/a"])


@pytest.mark.root
async def test_bind_ro_and_temp_mount(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("hello")
    async with temp_mount([Mount("bind", str(src), ("rbind", "ro"))], root=str(tmp_path)) as d:
        assert is_mountpoint(d)
        assert (Path(d) / "f").read_text() == "hello"
        with pytest.raises(OSError):
            (Path(d) / "g").write_text("nope")
        where = d
    assert not os.path.exists(where)


@pytest.mark.root
async def test_temp_mount_cleans_up_on_cancel(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    seen: list[str] = []

    async def user() -> None:
        async with temp_mount([Mount("bind", str(src), ("rbind",))], root=str(tmp_path)) as d:
            seen.append(d)
            await asyncio.sleep(10)

    t = asyncio.create_task(user())
    while not seen:
        await asyncio.sleep(0.01)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert not is_mountpoint(seen[0])
    assert not os.path.exists(seen[0])


@pytest.mark.overlay
def test_long_overlay_lowerdirs(tmp_path: Path) -> None:
    base = tmp_path / ("x" * 100)
    lowers = []
    for i in range(60):
        d = base / f"layer-{i:03d}" / "fs"
        d.mkdir(parents=True)
        (d / f"f{i}").write_text(str(i))
        lowers.append(str(d))
    target = tmp_path / "merged"
    target.mkdir()
    m = Mount("overlay", "overlay", ("lowerdir=" + ":".join(lowers),))
    assert len(m.options[0]) > os.sysconf("SC_PAGESIZE")
    mounter = LinuxMounter()
    mounter.mount(m, str(target))
    try:
        assert len(os.listdir(target)) == 60
    finally:
        mounter.unmount(str(target))
    assert not is_mountpoint(str(target))
