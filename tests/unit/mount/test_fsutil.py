"""copy_dir and disk_usage."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from arun.fsutil import copy_dir, disk_usage, supports_d_type


def test_copy_dir_preserves_everything(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"data" * 1000)
    os.chmod(src / "d" / "f", 0o4755)
    os.link(src / "d" / "f", src / "hard")
    os.symlink("d/f", src / "sym")
    os.mkfifo(src / "fifo", 0o600)
    os.setxattr(src / "d" / "f", "user.k", b"v")
    os.utime(src / "d" / "e", ns=(1_000_000_000, 2_000_000_000))
    os.utime(src / "sym", ns=(3_000_000_000, 4_000_000_000), follow_symlinks=False)
    os.chmod(src / "d", 0o710)
    dst = tmp_path / "dst"
    dst.mkdir()
    copy_dir(str(src), str(dst))
    assert (dst / "d" / "f").read_bytes() == b"data" * 1000
    assert stat.S_IMODE(os.lstat(dst / "d" / "f").st_mode) == 0o4755
    assert os.lstat(dst / "hard").st_ino == os.lstat(dst / "d" / "f").st_ino
    assert os.readlink(dst / "sym") == "d/f"
    assert os.lstat(dst / "sym").st_mtime_ns == 4_000_000_000
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)
    assert os.getxattr(dst / "d" / "f", "user.k") == b"v"
    assert os.lstat(dst / "d" / "e").st_mtime_ns == 2_000_000_000
    assert stat.S_IMODE(os.lstat(dst / "d").st_mode) == 0o710


@pytest.mark.root
def test_copy_dir_owners_and_devices(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    os.lchown(src / "f", 1000, 2000)
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    dst = tmp_path / "dst"
    dst.mkdir()
    copy_dir(str(src), str(dst))
    st = os.lstat(dst / "f")
    assert (st.st_uid, st.st_gid) == (1000, 2000)
    assert os.lstat(dst / "null").st_rdev == os.makedev(1, 3)


def test_disk_usage_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(os.urandom(100_000))
    before = disk_usage(str(tmp_path))
    os.link(tmp_path / "a", tmp_path / "b")
    assert disk_usage(str(tmp_path)) == before
    (tmp_path / "sub").mkdir()
    inodes, size = disk_usage(str(tmp_path))
    assert inodes == before[0] + 1 and size >= before[1]
    assert before[0] == 2  # the root and "a"


def test_supports_d_type(tmp_path: Path) -> None:
    assert supports_d_type(str(tmp_path)) is True
