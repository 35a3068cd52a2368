"""Mount spec helpers and mount_all ordering with the recording fake."""

from __future__ import annotations

import errno

import pytest

from arun.core.mount import MNT_DETACH, Mount, mount_all, overlay_dirs, read_only, unmount_all
from arun.errdefs import InvalidArgumentError
from arun.testing.mount import MountCall, RecordingMounter


def test_mount_all_in_order_and_unmount_in_reverse() -> None:
    m = RecordingMounter()
    mounts = [Mount("bind", "/a", ("rbind",)), Mount("tmpfs", "tmpfs", (), "sub/dir")]
    mount_all(m, mounts, "/t")
    assert [(c.op, c.target) for c in m.calls] == [("mount", "/t"), ("mount", "/t/sub/dir")]
    unmount_all(m, mounts, "/t")
    assert [(c.op, c.target) for c in m.calls[2:]] == [("unmount", "/t/sub/dir"), ("unmount", "/t")]
    assert m.mounted == []


def test_mount_all_rolls_back_on_failure() -> None:
    m = RecordingMounter(fail={"/t/b": errno.EPERM})
    mounts = [Mount("bind", "/a"), Mount("bind", "/b", (), "b"), Mount("bind", "/c", (), "c")]
    with pytest.raises(OSError) as ei:
        mount_all(m, mounts, "/t")
    assert ei.value.errno == errno.EPERM
    assert m.calls[-1] == MountCall("unmount", "/t", None, MNT_DETACH)
    assert m.mounted == []
    assert not any(c.target == "/t/c" for c in m.calls)


def test_target_may_not_escape() -> None:
    with pytest.raises(InvalidArgumentError):
        mount_all(RecordingMounter(), [Mount("bind", "/a", (), "../x")], "/t")


def test_read_only() -> None:
    ov = Mount("overlay", "overlay", ("index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2"))
    assert read_only([ov]) == [Mount("overlay", "overlay", ("index=off", "lowerdir=/u:/l1:/l2"))]
    assert read_only([Mount("bind", "/s", ("rw", "rbind"))]) == [Mount("bind", "/s", ("rbind", "ro"))]
    single = Mount("overlay", "overlay", ("workdir=/w", "upperdir=/u"))
    assert read_only([single]) == [Mount("bind", "/u", ("ro", "rbind"))]
    assert overlay_dirs(ov) == ("/u", ["/l1", "/l2"])
    with pytest.raises(InvalidArgumentError):
        overlay_dirs(Mount("bind", "/x"))
