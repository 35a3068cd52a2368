"""Applying layers with the walking differ: formats, metadata, whiteouts, digests, errors."""

from __future__ import annotations

import asyncio
import gzip
import os
import stat
import struct
from pathlib import Path

import pytest

from arun.content.local import LocalStore
from arun.core import mediatypes
from arun.core.content import Descriptor, digest_bytes
from arun.core.mount import Mount
from arun.diff.walking import WalkingDiff
from arun.errdefs import FailedPreconditionError, InvalidArgumentError, UnimplementedError
from arun.testing.layers import Entry, put_layer, tar_bytes

ROOT = os.geteuid() == 0
# A valid VFS_CAP_REVISION_2 value: cap_net_bind_service, effective.
CAP = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


def bind(path: Path, ro: bool = False) -> list[Mount]:
    return [Mount("bind", str(path), ("rbind", "ro" if ro else "rw"))]


def upper_mount(upper: Path, *lowers: Path) -> list[Mount]:
    opts = [f"upperdir={upper}", f"workdir={upper.parent / 'work'}"]
    if lowers:
        opts.append("lowerdir=" + ":".join(str(p) for p in lowers))
    return [Mount("overlay", "overlay", tuple(opts))]


ALL_TYPES = [
    Entry("etc/", "dir", mode=0o755, mtime=1_500_000_000),
    Entry("etc/passwd", data=b"root:x:0:0\n", mode=0o644, mtime=1_500_000_001),
    Entry("bin/", "dir", mode=0o711),
    Entry("bin/busybox", data=b"\x7fELF" + b"x" * 5000, mode=0o4755, uid=1000, gid=1001),
    Entry("bin/sh", "hardlink", linkname="bin/busybox", mode=0o4755, uid=1000, gid=1001),
    Entry("bin/ls", "symlink", linkname="busybox"),
    Entry("lib", "symlink", linkname="/usr/lib"),
    Entry("run/fifo", "fifo", mode=0o600),
    Entry("tmp/", "dir", mode=0o1777),
    Entry("caps", data=b"cap", xattrs={"user.k": b"\xff\x00bin", "security.capability": CAP}),
    Entry("srv/empty", data=b""),
]


@pytest.mark.parametrize("how", ["none", "gzip", "zstd"])
async def test_apply_all_types(how: str, tmp_path: Path, store: LocalStore, differ: WalkingDiff) -> None:
    tar = tar_bytes(ALL_TYPES)
    desc, diff_id = await put_layer(store, tar, how)
    root = tmp_path / "root"
    root.mkdir()
    got = await differ.apply(desc, bind(root))
    assert got == Descriptor(mediatypes.OCI_LAYER, diff_id, len(tar))

    assert (root / "etc/passwd").read_bytes() == b"root:x:0:0\n"
    st = os.lstat(root / "bin/busybox")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    if ROOT:
        assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert os.lstat(root / "bin/sh").st_ino == st.st_ino
    assert os.readlink(root / "bin/ls") == "busybox"
    assert os.readlink(root / "lib") == "/usr/lib"
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert stat.S_IMODE(os.lstat(root / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(root / "bin").st_mode) == 0o711
    assert os.getxattr(root / "caps", "user.k") == b"\xff\x00bin"
    if ROOT:
        assert os.getxattr(root / "caps", "security.capability") == CAP
    # Directory times are set after their children were created.
    assert os.lstat(root / "etc").st_mtime == 1_500_000_000
    assert os.lstat(root / "etc/passwd").st_mtime == 1_500_000_001
    # Implicit parents get 0755.
    assert stat.S_IMODE(os.lstat(root / "run").st_mode) == 0o755
    assert (root / "srv/empty").read_bytes() == b""


@pytest.mark.root
async def test_device_nodes(tmp_path: Path, store: LocalStore, differ: WalkingDiff) -> None:
    tar = tar_bytes(
        [
            Entry("dev/null", "char", mode=0o666, devmajor=1, devminor=3),
            Entry("dev/loop9", "block", mode=0o660, devmajor=7, devminor=9, gid=6),
        ]
    )
    desc, _ = await put_layer(store, tar)
    root = tmp_path / "root"
    root.mkdir()
    await differ.apply(desc, bind(root))
    st = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3) and stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(root / "dev/loop9")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 9) and st.st_gid == 6


async def test_whiteouts_native(tmp_path: Path, store: LocalStore, differ: WalkingDiff) -> None:
    root = tmp_path / "root"
    base = [
        Entry("a/keep", data=b"k"),
        Entry("a/gone", data=b"g"),
        Entry("dir/sub/f", data=b"f"),
        Entry("opq/old1", data=b"1"),
        Entry("opq/old2/x", data=b"2"),
    ]
    top = [
        Entry("a/.wh.gone"),
        Entry("a/.wh.never-existed"),
        Entry(".wh.dir"),
        Entry("opq/new", data=b"n"),
        Entry("opq/.wh..wh..opq"),
        Entry("opq/later", data=b"l"),
        Entry(".wh..wh.plnk"),  # aufs metadata: ignored
    ]
    root.mkdir()
    for layer in (base, top):
        desc, _ = await put_layer(store, tar_bytes(layer))
        await differ.apply(desc, bind(root))
    assert sorted(os.listdir(root / "a")) == ["keep"]
    assert not (root / "dir").exists()
    assert sorted(os.listdir(root / "opq")) == ["later", "new"]


@pytest.mark.root
async def test_whiteouts_overlay_form(tmp_path: Path, store: LocalStore, differ: WalkingDiff) -> None:
    lower = tmp_path / "lower"
    (lower / "opq").mkdir(parents=True)
    (lower / "parentdir").mkdir(mode=0o700)
    os.chown(lower / "parentdir", 123, 456)
    os.utime(lower / "parentdir", (1_000_000, 2_000_000))
    upper = tmp_path / "upper"
    upper.mkdir()
    tar = tar_bytes(
        [
            Entry("gone-file", "file", data=b""),
            Entry(".wh.gone", uid=5, gid=6),
            Entry("opq/.wh..wh..opq"),
            Entry("opq/new", data=b"n"),
            Entry("parentdir/child", data=b"c"),
        ]
    )
    desc, _ = await put_layer(store, tar)
    await differ.apply(desc, upper_mount(upper, lower))
    st = os.lstat(upper / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and (st.st_uid, st.st_gid) == (5, 6)
    assert os.getxattr(upper / "opq", "trusted.overlay.opaque") == b"y"
    assert (upper / "opq/new").read_bytes() == b"n"
    # The implicit parent copied its mode and owner from the lower layer (its mtime then
    # moves with the child created in it, as in containerd).
    st = os.lstat(upper / "parentdir")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 123, 456)
    # Nothing was written to the lower dir.
    assert sorted(os.listdir(lower)) == ["opq", "parentdir"] and os.listdir(lower / "opq") == []


async def test_replacing_entries(tmp_path: Path, store: LocalStore, differ: WalkingDiff) -> None:
    root = tmp_path / "root"
    root.mkdir()
    layer1 = [
        Entry("file-to-dir", data=b"f"),
        Entry("dir-to-file/", "dir"),
        Entry("dir-to-file/child", data=b"c"),
        Entry("link-to-file", "symlink", linkname="file-to-dir"),
        Entry("merged/", "dir", mode=0o700),
        Entry("merged/old", data=b"o"),
    ]
    layer2 = [
        Entry("file-to-dir/", "dir"),
        Entry("dir-to-file", data=b"now a file"),
        Entry("link-to-file", data=b"replaced"),
        Entry("merged/", "dir", mode=0o755),
        Entry("merged/new", data=b"n"),
    ]
    for layer in (layer1, layer2):
        desc, _ = await put_layer(store, tar_bytes(layer))
        await differ.apply(desc, bind(root))
    assert (root / "file-to-dir").is_dir()
    assert (root / "dir-to-file").read_bytes() == b"now a file"
    assert not os.path.islink(root / "link-to-file")
    assert (root / "link-to-file").read_bytes() == b"replaced"
    assert sorted(os.listdir(root / "merged")) == ["new", "old"]
    assert stat.S_IMODE(os.lstat(root / "merged").st_mode) == 0o755


@pytest.mark.parametrize("how", ["none", "gzip", "zstd"])
async def test_empty_layers(how: str, tmp_path: Path, store: LocalStore, differ: WalkingDiff) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for tar in (b"", b"\0" * 1024, tar_bytes([])):
        desc, diff_id = await put_layer(store, tar, how)
        got = await differ.apply(desc, bind(root))
        assert (got.digest, got.size) == (diff_id, len(tar))
    assert os.listdir(root) == []


async def test_digest_and_size_are_verified(tmp_path: Path, store: LocalStore, differ: WalkingDiff) -> None:
    root = tmp_path / "root"
    root.mkdir()
    desc, _ = await put_layer(store, tar_bytes([Entry("f", data=b"x")]))
    with pytest.raises(FailedPreconditionError):
        await differ.apply(Descriptor(desc.media_type, desc.digest, desc.size + 1), bind(root))
    # A blob stored under a digest it does not have (a corrupt store).
    other = tar_bytes([Entry("g", data=b"y")])
    fake = digest_bytes(b"something else")
    blob_path = Path(store.blob_path(fake))
    blob_path.parent.mkdir(parents=True, exist_ok=True)
    blob_path.write_bytes(gzip.compress(other))
    with pytest.raises(FailedPreconditionError):
        await differ.apply(Descriptor(mediatypes.OCI_LAYER_GZIP, fake, 0), bind(tmp_path / "root"))


async def test_bad_requests(tmp_path: Path, store: LocalStore, differ: WalkingDiff) -> None:
    root = tmp_path / "root"
    root.mkdir()
    desc, _ = await put_layer(store, tar_bytes([Entry("f", data=b"x")]))
    with pytest.raises(UnimplementedError):
        await differ.apply(
            Descriptor("application/vnd.oci.image.config.v1+json", desc.digest, desc.size), bind(root)
        )
    with pytest.raises(InvalidArgumentError):
        await differ.apply(desc, bind(root, ro=True))
    with pytest.raises(InvalidArgumentError):
        await differ.apply(desc, [])
    with pytest.raises(InvalidArgumentError):
        await differ.apply(Descriptor(desc.media_type, "sha256:nope", 1), bind(root))
    assert os.listdir(root) == []


@pytest.mark.parametrize(
    "blob",
    [
        b"not a tar at all, but long enough to fill a tar header block..." * 10,
        tar_bytes([Entry("f", data=b"x" * 10000)])[:3000],  # truncated inside the data
        gzip.compress(tar_bytes([Entry("f", data=b"x" * 100)]))[:-12],  # truncated gzip
        b"\x1f\x8b\x08" + b"\0" * 100,  # broken gzip header
    ],
    ids=["garbage", "truncated-tar", "truncated-gzip", "broken-gzip"],
)
async def test_malformed_archives(
    blob: bytes, tmp_path: Path, store: LocalStore, differ: WalkingDiff
) -> None:
    dgst = digest_bytes(blob)
    w = await store.writer("bad")
    await w.write(blob)
    await w.commit(len(blob), dgst)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(InvalidArgumentError):
        await differ.apply(Descriptor(mediatypes.OCI_LAYER_GZIP, dgst, len(blob)), bind(root))


async def test_apply_runs_off_the_loop(tmp_path: Path, store: LocalStore, differ: WalkingDiff) -> None:
    """Other tasks keep running while a layer is extracted (no timing asserted, only interleaving)."""
    entries = [Entry(f"d{i % 20}/f{i}", data=os.urandom(2000)) for i in range(3000)]
    desc, _ = await put_layer(store, tar_bytes(entries))
    root = tmp_path / "root"
    root.mkdir()
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = ticks
    await differ.apply(desc, bind(root))
    during = ticks - start
    done = True
    await t
    assert during > 10
    assert sum(len(os.listdir(root / f"d{i}")) for i in range(20)) == 3000


async def test_cancel_stops_extraction(tmp_path: Path, store: LocalStore, differ: WalkingDiff) -> None:
    entries = [Entry(f"f{i}", data=b"x" * 100) for i in range(20000)]
    desc, _ = await put_layer(store, tar_bytes(entries))
    root = tmp_path / "root"
    root.mkdir()
    task = asyncio.create_task(differ.apply(desc, bind(root)))
    while not os.listdir(root):
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # When the task reports cancellation the worker has stopped: nothing is created afterwards.
    n = len(os.listdir(root))
    await asyncio.sleep(0.05)
    assert len(os.listdir(root)) == n < 20000
