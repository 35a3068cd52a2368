"""arun.cri.userns on its own: pinned user namespaces and id-mapped views of a snapshot's layers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arun.core.mount import Mount
from arun.cri import userns
from arun.mount import LinuxMounter, is_mountpoint

pytestmark = [pytest.mark.root, pytest.mark.overlay]

MAPS = [{"containerID": 0, "hostID": 200000, "size": 65536}]


def test_create_namespaces_pins_and_unpins(tmp_path: Path) -> None:
    ns = str(tmp_path / "pinned" / "user")
    netns = userns.create_namespaces(ns, MAPS, MAPS, str(tmp_path / "netns"))
    try:
        assert is_mountpoint(ns) and is_mountpoint(netns)
        assert os.stat(ns).st_ino != os.stat("/proc/self/ns/user").st_ino
    finally:
        userns.unpin(ns)
        userns.unpin(netns)
    assert not os.path.exists(ns) and not os.path.exists(netns)


def test_create_namespaces_failure_leaves_nothing(tmp_path: Path) -> None:
    ns = str(tmp_path / "user")
    bad = [{"containerID": 0, "hostID": 200000, "size": 0}]  # the kernel refuses a 0-length map
    with pytest.raises(OSError):
        userns.create_namespaces(ns, bad, bad, str(tmp_path / "netns"))
    assert not os.path.exists(ns)
    assert os.listdir(tmp_path / "netns") == []


def test_map_rootfs_overlay(tmp_path: Path) -> None:
    snaps = tmp_path / "snapshots"
    for d in ("1/fs", "2/fs", "3/fs", "3/work"):
        (snaps / d).mkdir(parents=True)
    (snaps / "1" / "fs" / "f").write_text("x")
    ns = str(tmp_path / "user")
    userns.create_namespaces(ns, MAPS, MAPS)
    merged = tmp_path / "merged"
    merged.mkdir()
    work = str(tmp_path / "idmap")
    try:
        m = Mount(
            type="overlay",
            source="overlay",
            options=(
                f"workdir={snaps}/3/work",
                f"upperdir={snaps}/3/fs",
                f"lowerdir={snaps}/2/fs:{snaps}/1/fs",
            ),
        )
        mapped = userns.map_rootfs([m], work, ns, 200000, 200000)
        opts = dict(o.split("=", 1) for o in mapped[0].options)
        assert opts["upperdir"] == f"{snaps}/3/fs" and opts["workdir"] == f"{snaps}/3/work"
        assert opts["lowerdir"] == f"{work}/layers/2/fs:{work}/layers/1/fs"
        try:
            LinuxMounter().mount(mapped[0], str(merged))
        finally:
            userns.unmap_rootfs(work)
        assert not os.path.exists(work)
        try:
            # Disk uid 0 in a lower layer is the pod's root; the upper dir belongs to it too.
            assert (merged / "f").stat().st_uid == 200000
            assert (snaps / "3" / "fs").stat().st_uid == 200000
            assert not os.statvfs(merged).f_flag & os.ST_RDONLY
            assert (merged / "f").read_text() == "x"
        finally:
            LinuxMounter().unmount(str(merged))
        # The layers themselves are untouched.
        assert (snaps / "1" / "fs" / "f").stat().st_uid == 0
    finally:
        userns.unpin(ns)


def test_map_rootfs_refuses_unknown_mounts(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cannot id-map"):
        userns.map_rootfs([Mount(type="ext4", source="/dev/sda1")], str(tmp_path / "w"), "/nonexistent", 1, 1)


def test_probe(tmp_path: Path) -> None:
    assert userns.probe(str(tmp_path)) == ""
    assert os.listdir(tmp_path) == []
