"""Compare (Diff): the walking diff of two trees, written as a layer; and the round trip through Apply."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from arun.content.local import LocalStore, MemoryLabelStore
from arun.core import mediatypes
from arun.core.content import Descriptor, digest_bytes
from arun.core.diff import UNCOMPRESSED_LABEL
from arun.core.mount import Mount
from arun.diff.changes import ChangeKind, changes
from arun.diff.walking import WalkingDiff
from arun.errdefs import UnimplementedError
from arun.testing.suites.snapshotter import snapshot_tree


def ro(p: Path) -> list[Mount]:
    return [Mount("bind", str(p), ("rbind", "ro"))]


def make_lower(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc/gone").write_text("to be deleted")
    (root / "dir/sub").mkdir(parents=True)
    (root / "dir/sub/f").write_text("f")
    (root / "same").write_text("unchanged")
    os.utime(root / "same", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    os.symlink("etc/hosts", root / "link")


async def _entries(store: LocalStore, desc: Descriptor) -> tuple[list[str], bytes]:
    ra = await store.reader_at(desc)
    blob = await ra.read_at(0, desc.size)
    await ra.close()
    raw = gzip.decompress(blob) if desc.media_type == mediatypes.OCI_LAYER_GZIP else blob
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return [m.name + ("/" if m.isdir() else "") for m in tf.getmembers()], raw


def test_changes(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    make_lower(lower)
    shutil.copytree(lower, upper, symlinks=True)
    os.remove(upper / "etc/gone")
    (upper / "etc/hosts").write_text("changed\n")
    shutil.rmtree(upper / "dir")
    (upper / "new").mkdir()
    (upper / "new/file").write_text("n")
    got = [(c.kind, c.path) for c in changes(str(lower), str(upper))]
    # In walk order (sorted names, depth first); a deleted directory once, not its contents.
    assert got == [
        (ChangeKind.DELETE, "dir"),
        (ChangeKind.DELETE, "etc/gone"),
        (ChangeKind.MODIFY, "etc/hosts"),
        (ChangeKind.ADD, "new"),
        (ChangeKind.ADD, "new/file"),
    ]
    # Nothing else: "etc" itself, "same" and "link" are unchanged (directory mtimes do not count).
    assert {p for _, p in got} == {"dir", "etc/hosts", "etc/gone", "new", "new/file"}


async def test_compare_writes_layer_with_uncompressed_label(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "content", MemoryLabelStore())
    differ = WalkingDiff(store, tmp_root=str(tmp_path))
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    make_lower(lower)
    shutil.copytree(lower, upper, symlinks=True)
    os.remove(upper / "etc/gone")
    (upper / "added").write_text("a")
    desc = await differ.compare(ro(lower), ro(upper), labels={"x": "y"})
    assert desc.media_type == mediatypes.OCI_LAYER_GZIP
    names, raw = await _entries(store, desc)
    assert names == ["added", "etc/", "etc/.wh.gone"]
    info = await store.info(desc.digest)
    assert info.labels == {"x": "y", UNCOMPRESSED_LABEL: digest_bytes(raw)}
    assert desc.size == info.size
    assert await store.list_statuses() == []


async def test_compare_from_scratch_and_uncompressed(tmp_path: Path, store: LocalStore) -> None:
    differ = WalkingDiff(store, tmp_root=str(tmp_path))
    upper = tmp_path / "upper"
    make_lower(upper)
    desc = await differ.compare([], ro(upper), media_type=mediatypes.OCI_LAYER)
    names, raw = await _entries(store, desc)
    assert desc.digest == digest_bytes(raw)
    assert names == ["dir/", "dir/sub/", "dir/sub/f", "etc/", "etc/gone", "etc/hosts", "link", "same"]
    with pytest.raises(UnimplementedError):
        await differ.compare([], ro(upper), media_type=mediatypes.OCI_LAYER_ZSTD)


async def test_compare_hard_links(tmp_path: Path, store: LocalStore) -> None:
    differ = WalkingDiff(store, tmp_root=str(tmp_path))
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    (upper / "a").write_text("shared")
    os.link(upper / "a", upper / "b")
    desc = await differ.compare(ro(lower), ro(upper), media_type=mediatypes.OCI_LAYER)
    _, raw = await _entries(store, desc)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        b = tf.getmember("b")
        assert b.islnk() and b.linkname == "a"


async def test_round_trip(tmp_path: Path, store: LocalStore) -> None:
    """apply(diff(lower, upper)) on a copy of lower gives upper."""
    differ = WalkingDiff(store, tmp_root=str(tmp_path))
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    make_lower(lower)
    shutil.copytree(lower, upper, symlinks=True)
    os.remove(upper / "etc/gone")
    shutil.rmtree(upper / "dir/sub")
    (upper / "dir/sub").write_text("a file where a dir was")
    (upper / "etc/hosts").write_text("changed\n")
    os.chmod(upper / "same", 0o600)
    os.remove(upper / "link")
    os.symlink("elsewhere", upper / "link")
    (upper / "deep/er").mkdir(parents=True)
    (upper / "deep/er/x").write_bytes(os.urandom(100_000))
    desc = await differ.compare(ro(lower), ro(upper))
    target = tmp_path / "target"
    shutil.copytree(lower, target, symlinks=True)
    await differ.apply(desc, [Mount("bind", str(target), ("rbind", "rw"))])
    assert snapshot_tree(str(target)) == snapshot_tree(str(upper))
