"""Bundle directories: layout, clean removal, and never deleting through a mount."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from arun.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError
from arun.runtime import bundle


def test_create_layout(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    b = bundle.create(root, state, "ns", "c1", b'{"ociVersion":"1.1.0"}')
    assert b.path == state / "ns" / "c1" and b.work == root / "ns" / "c1"
    assert stat.S_IMODE(b.path.stat().st_mode) == 0o700
    assert stat.S_IMODE(b.work.stat().st_mode) == 0o711
    assert (b.path / "config.json").read_bytes() == b'{"ociVersion":"1.1.0"}'
    assert (b.path / "rootfs").is_dir()
    assert os.readlink(b.path / "work") == str(b.work)
    assert bundle.load(root, state, "ns", "c1") == b
    with pytest.raises(AlreadyExistsError):
        bundle.create(root, state, "ns", "c1", b"{}")
    # The failed second create left the first intact.
    assert (b.path / "config.json").exists()
    with pytest.raises(NotFoundError):
        bundle.load(root, state, "ns", "c2")


def test_invalid_ids(tmp_path: Path) -> None:
    for ns, id in (("ns", "../x"), ("ns", ""), ("a/b", "c"), ("ns", "x" * 77)):
        with pytest.raises(InvalidArgumentError):
            bundle.create(tmp_path, tmp_path, ns, id, b"{}")
    assert list(tmp_path.iterdir()) == []


def test_leftover_work_dir_is_replaced(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    (root / "ns" / "c1").mkdir(parents=True)
    (root / "ns" / "c1" / "junk").write_text("x")
    b = bundle.create(root, state, "ns", "c1", b"{}")
    assert list(b.work.iterdir()) == []


def test_write_read_delete(tmp_path: Path) -> None:
    b = bundle.create(tmp_path / "root", tmp_path / "state", "ns", "c1", b"{}")
    b.write("bootstrap.json", '{"a": 1}')
    assert b.read("bootstrap.json") == '{"a": 1}'
    assert b.read("nothing") is None
    assert not list(b.path.glob(".*.tmp"))
    b.delete()
    assert not b.path.exists() and not b.work.exists()
    assert list((tmp_path / "state" / "ns").iterdir()) == []
    b.delete()  # twice is fine


def test_unescape_mountinfo() -> None:
    assert bundle._unescape(r"/a\040b\011c") == "/a b\tc"


@pytest.mark.root
def test_delete_unmounts_and_never_removes_through_a_mount(tmp_path: Path) -> None:
    source = tmp_path / "precious"
    source.mkdir()
    (source / "data").write_text("keep me")
    b = bundle.create(tmp_path / "root", tmp_path / "state", "ns", "c1", b"{}")
    inner = b.path / "rootfs"
    other = b.work / "mnt"
    other.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(inner)], check=True)
    subprocess.run(["mount", "--bind", str(source), str(inner)], check=True)  # stacked twice
    subprocess.run(["mount", "--bind", str(source), str(other)], check=True)
    try:
        assert bundle.mounts_under(b.path)
        b.delete()
        assert not b.path.exists() and not b.work.exists()
        assert (source / "data").read_text() == "keep me"
        assert bundle.mounts_under(tmp_path) == []
    finally:
        for p in bundle.mounts_under(tmp_path):
            subprocess.run(["umount", "-l", p], check=False)


def test_create_for_a_user_namespace(tmp_path: Path) -> None:
    # The root group of the task's user namespace may traverse the bundle (to reach rootfs/).
    root, state = tmp_path / "root", tmp_path / "state"
    spec = b'{"linux":{"gidMappings":[{"containerID":0,"hostID":424242,"size":65536}]}}'
    b = bundle.create(root, state, "ns", "u1", spec)
    st = b.path.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o710, 0, 424242)
    plain = bundle.create(root, state, "ns", "p1", b'{"linux":{}}')
    assert (stat.S_IMODE(plain.path.stat().st_mode), plain.path.stat().st_gid) == (0o700, 0)
