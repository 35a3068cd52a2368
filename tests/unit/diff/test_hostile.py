"""A corpus of hostile layers: each is refused with a clear InvalidArgumentError (or, where the
archive is legal, applied harmlessly) and nothing outside the target is touched.

Every case runs twice: onto a plain directory (native/bind apply) and into an overlay upper dir
(whiteouts in overlay form). A sentinel directory next to the target is fingerprinted before and
after: names, types, modes, contents, link targets and times of everything in it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from arun.content.local import LocalStore
from arun.core.mount import Mount
from arun.diff.walking import WalkingDiff
from arun.errdefs import InvalidArgumentError
from arun.testing.layers import Entry, put_layer, tar_bytes

Corpus = Callable[[Path], list[Entry]]


def fingerprint(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                extra = Path(p).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns, extra)
    return out


# Each case gets the absolute path of the sentinel dir ("outside") and returns the layer entries.
REFUSED: dict[str, Corpus] = {
    "dotdot": lambda out: [Entry("../outside/evil", data=b"pwned")],
    "dotdot-nested": lambda out: [Entry("a/b/../../../outside/evil", data=b"pwned")],
    "dotdot-dir": lambda out: [Entry("../outside/newdir/", "dir")],
    "absolute": lambda out: [Entry(f"{out}/evil", data=b"pwned")],
    "absolute-root": lambda out: [Entry("/evil-at-root", data=b"pwned")],
    "symlink-escape-relative": lambda out: [
        Entry("link", "symlink", linkname="../outside"),
        Entry("link/evil", data=b"pwned"),
    ],
    "symlink-escape-absolute": lambda out: [
        Entry("link", "symlink", linkname=str(out)),
        Entry("link/evil", data=b"pwned"),
    ],
    "symlink-dir-then-file": lambda out: [
        Entry("d/", "dir"),
        Entry("d/ok", data=b"fine"),
        Entry("d", "symlink", linkname=str(out)),
        Entry("d/sentinel", data=b"pwned"),
    ],
    "symlink-chain": lambda out: [
        Entry("a", "symlink", linkname="b"),
        Entry("b", "symlink", linkname=str(out)),
        Entry("a/evil", data=b"pwned"),
    ],
    "symlink-inside-followed": lambda out: [
        Entry("real/", "dir"),
        Entry("alias", "symlink", linkname="real"),
        Entry("alias/f", data=b"even inside, never followed"),
    ],
    "symlink-dir-with-subdir": lambda out: [
        Entry("link", "symlink", linkname=str(out)),
        Entry("link/newdir/", "dir"),
    ],
    "hardlink-dotdot": lambda out: [Entry("hl", "hardlink", linkname="../outside/sentinel")],
    "hardlink-absolute": lambda out: [Entry("hl", "hardlink", linkname=f"{out}/sentinel")],
    "hardlink-through-symlink": lambda out: [
        Entry("link", "symlink", linkname=str(out)),
        Entry("hl", "hardlink", linkname="link/sentinel"),
    ],
    "hardlink-missing": lambda out: [Entry("hl", "hardlink", linkname="does/not/exist")],
    "hardlink-to-dir": lambda out: [Entry("d/", "dir"), Entry("hl", "hardlink", linkname="d")],
    "whiteout-dotdot": lambda out: [Entry("../outside/.wh.sentinel")],
    "whiteout-names-parent": lambda out: [Entry("sub/.wh...")],
    "whiteout-names-self": lambda out: [Entry("sub/.wh..")],
    "whiteout-through-symlink": lambda out: [
        Entry("link", "symlink", linkname=str(out)),
        Entry("link/.wh.sentinel"),
    ],
    "opaque-through-symlink": lambda out: [
        Entry("link", "symlink", linkname=str(out)),
        Entry("link/.wh..wh..opq"),
    ],
    "device-dotdot": lambda out: [Entry("../outside/null", "char", devmajor=1, devminor=3)],
    "fifo-through-symlink": lambda out: [
        Entry("link", "symlink", linkname=str(out)),
        Entry("link/fifo", "fifo"),
    ],
    "parent-is-a-file": lambda out: [Entry("f", data=b"x"), Entry("f/child", data=b"y")],
    "nul-in-pax-path": lambda out: [Entry("placeholder", data=b"x", pax={"path": "ok\0/../../outside/evil"})],
    "pax-path-escape": lambda out: [Entry("innocent", data=b"x", pax={"path": "../outside/evil"})],
    "pax-linkpath-escape": lambda out: [
        Entry("hl", "hardlink", linkname="x", pax={"linkpath": "../outside/sentinel"})
    ],
}

# Legal archives that a careless extractor would let write outside: applied, but only inside.
HARMLESS: dict[str, Corpus] = {
    "file-replaces-symlink": lambda out: [
        Entry("f", "symlink", linkname=f"{out}/sentinel"),
        Entry("f", data=b"must not reach the sentinel"),
    ],
    "file-replaces-relative-symlink": lambda out: [
        Entry("f", "symlink", linkname="../outside/sentinel"),
        Entry("f", data=b"must not reach the sentinel"),
    ],
    "dir-replaces-symlink": lambda out: [
        Entry("d", "symlink", linkname=str(out)),
        Entry("d/", "dir", mode=0o700),
        Entry("d/x", data=b"inside"),
    ],
    "hardlink-replaces-symlink": lambda out: [
        Entry("target", data=b"t"),
        Entry("f", "symlink", linkname=f"{out}/sentinel"),
        Entry("f", "hardlink", linkname="target"),
    ],
    "hardlink-to-symlink": lambda out: [
        Entry("s", "symlink", linkname=f"{out}/sentinel"),
        Entry("hl", "hardlink", linkname="s"),
    ],
    "file-replaces-hardlink": lambda out: [
        Entry("a", data=b"original"),
        Entry("b", "hardlink", linkname="a"),
        Entry("b", data=b"new content for b only"),
    ],
    "fifo-then-file": lambda out: [Entry("p", "fifo"), Entry("p", data=b"no blocking on the fifo")],
    "symlinks-pointing-out": lambda out: [
        Entry("abs", "symlink", linkname=f"{out}/sentinel"),
        Entry("rel", "symlink", linkname="../../../../outside/sentinel"),
    ],
    "whiteout-of-symlink": lambda out: [
        Entry("s", "symlink", linkname=str(out)),
        Entry(".wh.s"),
    ],
}


def _expected_harmless(name: str, root: Path, overlay: bool) -> None:
    if name.startswith("file-replaces") and name != "file-replaces-hardlink":
        assert not os.path.islink(root / "f") and (root / "f").read_bytes() == b"must not reach the sentinel"
    elif name == "dir-replaces-symlink":
        assert (
            (root / "d").is_dir()
            and not os.path.islink(root / "d")
            and (root / "d/x").read_bytes() == b"inside"
        )
    elif name == "hardlink-replaces-symlink":
        assert os.lstat(root / "f").st_ino == os.lstat(root / "target").st_ino
    elif name == "hardlink-to-symlink":
        assert os.path.islink(root / "hl") and os.readlink(root / "hl").endswith("sentinel")
    elif name == "file-replaces-hardlink":
        assert (root / "a").read_bytes() == b"original"
        assert (root / "b").read_bytes() == b"new content for b only"
    elif name == "fifo-then-file":
        assert (root / "p").read_bytes() == b"no blocking on the fifo"
    elif name == "whiteout-of-symlink":
        st = os.lstat(root / "s") if overlay else None
        assert (st is not None and stat.S_ISCHR(st.st_mode)) if overlay else not os.path.lexists(root / "s")


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("sentinel")
    (outside / "subdir").mkdir()
    (outside / "subdir" / "keep").write_text("keep")
    os.symlink("sentinel", outside / "link-in-outside")
    work = tmp_path / "work"
    work.mkdir()
    target = work / "target"
    target.mkdir()
    return outside, target


def _mounts(mode: str, target: Path) -> list[Mount]:
    if mode == "bind":
        return [Mount("bind", str(target), ("rbind", "rw"))]
    return [Mount("overlay", "overlay", (f"upperdir={target}", f"workdir={target.parent}/w"))]


@pytest.mark.parametrize("mode", ["bind", "overlay-upper"])
@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
async def test_refused(case: str, mode: str, tmp_path: Path) -> None:
    outside, target = _layout(tmp_path)
    store = LocalStore(tmp_path / "content")
    differ = WalkingDiff(store, tmp_root=str(tmp_path))
    before = fingerprint(outside)
    desc, _ = await put_layer(store, tar_bytes(REFUSED[case](outside)))
    with pytest.raises(InvalidArgumentError) as ei:
        await differ.apply(desc, _mounts(mode, target))
    assert "invalid tar entry" in str(ei.value) or "invalid tar archive" in str(ei.value), ei.value
    assert fingerprint(outside) == before
    assert not os.path.lexists("/evil-at-root")
    # Nothing next to the target either.
    assert sorted(os.listdir(target.parent)) == ["target"]


def _harmless_params() -> list[object]:
    out: list[object] = []
    for case in HARMLESS:
        for mode in ("bind", "overlay-upper"):
            # An overlay whiteout is a 0/0 character device: creating one needs root.
            marks = [pytest.mark.root] if (case, mode) == ("whiteout-of-symlink", "overlay-upper") else []
            out.append(pytest.param(case, mode, marks=marks, id=f"{case}-{mode}"))
    return out


@pytest.mark.parametrize(("case", "mode"), _harmless_params())
async def test_harmless(case: str, mode: str, tmp_path: Path) -> None:
    outside, target = _layout(tmp_path)
    store = LocalStore(tmp_path / "content")
    differ = WalkingDiff(store, tmp_root=str(tmp_path))
    before = fingerprint(outside)
    desc, _ = await put_layer(store, tar_bytes(HARMLESS[case](outside)))
    await differ.apply(desc, _mounts(mode, target))
    assert fingerprint(outside) == before
    _expected_harmless(case, target, mode == "overlay-upper")


async def test_existing_symlink_from_a_lower_layer_is_not_followed(tmp_path: Path) -> None:
    """Layer 1 leaves ``etc -> /outside``; layer 2 writing ``etc/passwd`` is refused."""
    outside, target = _layout(tmp_path)
    store = LocalStore(tmp_path / "content")
    differ = WalkingDiff(store, tmp_root=str(tmp_path))
    before = fingerprint(outside)
    l1, _ = await put_layer(store, tar_bytes([Entry("etc", "symlink", linkname=str(outside))]))
    await differ.apply(l1, _mounts("bind", target))
    l2, _ = await put_layer(store, tar_bytes([Entry("etc/sentinel", data=b"pwned")]))
    with pytest.raises(InvalidArgumentError, match="symlink"):
        await differ.apply(l2, _mounts("bind", target))
    l3, _ = await put_layer(store, tar_bytes([Entry("etc/.wh.sentinel")]))
    with pytest.raises(InvalidArgumentError, match="symlink"):
        await differ.apply(l3, _mounts("bind", target))
    assert fingerprint(outside) == before


@pytest.mark.root
async def test_trusted_xattrs_from_archives_are_ignored(tmp_path: Path) -> None:
    _, target = _layout(tmp_path)
    store = LocalStore(tmp_path / "content")
    differ = WalkingDiff(store, tmp_root=str(tmp_path))
    tar = tar_bytes(
        [
            Entry("d/", "dir", xattrs={"trusted.overlay.opaque": b"y", "trusted.overlay.redirect": b"/etc"}),
            Entry("f", data=b"x", xattrs={"trusted.evil": b"1", "user.fine": b"ok"}),
        ]
    )
    desc, _ = await put_layer(store, tar)
    await differ.apply(desc, _mounts("overlay-upper", target))
    assert os.listxattr(target / "d") == []
    assert os.listxattr(target / "f") == ["user.fine"]


@pytest.mark.root
async def test_device_nodes_land_inside(tmp_path: Path) -> None:
    outside, target = _layout(tmp_path)
    store = LocalStore(tmp_path / "content")
    differ = WalkingDiff(store, tmp_root=str(tmp_path))
    before = fingerprint(outside)
    desc, _ = await put_layer(
        store,
        tar_bytes(
            [
                Entry("dev/sda", "block", mode=0o660, devmajor=8, devminor=0),
                Entry("dev/mem", "char", mode=0o640, devmajor=1, devminor=1),
                Entry("dev/mem", data=b"replaced without opening the device"),
            ]
        ),
    )
    await differ.apply(desc, _mounts("bind", target))
    assert stat.S_ISBLK(os.lstat(target / "dev/sda").st_mode)
    assert (target / "dev/mem").read_bytes() == b"replaced without opening the device"
    assert fingerprint(outside) == before
