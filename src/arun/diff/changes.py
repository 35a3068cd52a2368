"""Comparing two trees and writing the difference as a layer tar (containerd's walking diff).

``changes(lower, upper)`` walks both trees in the same order (names sorted,
depth first, a path separator sorting before every other byte) and yields
additions, modifications and deletions; a deleted directory is reported once,
not its contents. Two entries are the same when they are the same inode, or
have the same mode, owner, device number and ``security.capability``, and —
for non-directories — the same size and mtime (if both mtimes have no
sub-second part, the contents or link targets are compared instead).

``write_diff`` turns the changes into a PAX tar: deletions become ``.wh.``
entries, parents of every entry are included, hard links within the layer
stay hard links, sockets are skipped.

Blocking; run it in a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO

__all__ = ["Change", "ChangeKind", "changes", "write_diff"]

_CAP = "security.capability"


class ChangeKind(Enum):
    UNMODIFIED = 0
    ADD = 1
    MODIFY = 2
    DELETE = 3


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    path: str  # relative, "/"-separated, no leading slash
    st: os.stat_result | None  # of the upper entry (None for a deletion)


def _walk(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """Entries below ``root`` depth-first, siblings sorted by name bytes (filepath.Walk's order)."""
    stack: list[tuple[str, list[str]]] = []

    def listing(rel: str) -> list[str]:
        names = os.listdir(os.path.join(root, rel) if rel else root)
        names.sort(key=os.fsencode, reverse=True)
        return names

    stack.append(("", listing("")))
    while stack:
        rel, names = stack[-1]
        if not names:
            stack.pop()
            continue
        name = names.pop()
        path = f"{rel}/{name}" if rel else name
        st = os.lstat(os.path.join(root, path))
        yield path, st
        if stat.S_ISDIR(st.st_mode):
            stack.append((path, listing(path)))


def _key(path: str) -> bytes:
    # Compare as containerd does: the separator sorts lowest.
    return os.fsencode(path).replace(b"/", b"\0")


def _cap(path: str) -> bytes | None:
    try:
        return os.getxattr(path, _CAP, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def _same_content(p1: str, p2: str) -> bool:
    with open(p1, "rb", buffering=0) as f1, open(p2, "rb", buffering=0) as f2:
        while True:
            b1 = f1.read(1 << 16)
            b2 = f2.read(1 << 16)
            if b1 != b2:
                return False
            if not b1:
                return True


def _same(lower: str, s1: os.stat_result, upper: str, s2: os.stat_result) -> bool:
    if (s1.st_dev, s1.st_ino) == (s2.st_dev, s2.st_ino):
        return True
    if (s1.st_mode, s1.st_uid, s1.st_gid, s1.st_rdev) != (s2.st_mode, s2.st_uid, s2.st_gid, s2.st_rdev):
        return False
    if _cap(lower) != _cap(upper):
        return False
    if stat.S_ISDIR(s1.st_mode):
        return True
    if s1.st_size != s2.st_size:
        return False
    sec1, ns1 = divmod(s1.st_mtime_ns, 1_000_000_000)
    sec2, ns2 = divmod(s2.st_mtime_ns, 1_000_000_000)
    if sec1 != sec2:
        return False
    if ns1 == 0 and ns2 == 0:
        if stat.S_ISLNK(s1.st_mode):
            return os.readlink(lower) == os.readlink(upper)
        if s1.st_size == 0:
            return True
        return _same_content(lower, upper)
    return ns1 == ns2


def changes(lower: str, upper: str) -> Iterator[Change]:
    """The changes that turn ``lower`` into ``upper`` (an empty ``lower`` path means an empty tree)."""
    a = _walk(lower) if lower else iter(())
    b = _walk(upper)
    f1 = next(a, None)
    f2 = next(b, None)
    rmdir = ""  # prefix of a deleted directory whose contents are not reported
    while f1 is not None or f2 is not None:
        if f1 is None:
            kind = ChangeKind.ADD
        elif f2 is None:
            kind = ChangeKind.DELETE
        else:
            k1, k2 = _key(f1[0]), _key(f2[0])
            kind = ChangeKind.DELETE if k1 < k2 else ChangeKind.ADD if k1 > k2 else ChangeKind.MODIFY
        if kind is ChangeKind.ADD:
            assert f2 is not None
            rmdir = ""
            yield Change(ChangeKind.ADD, f2[0], f2[1])
            f2 = next(b, None)
        elif kind is ChangeKind.DELETE:
            assert f1 is not None
            path, st = f1
            f1 = next(a, None)
            if rmdir and path.startswith(rmdir):
                continue
            rmdir = path + "/" if stat.S_ISDIR(st.st_mode) else ""
            yield Change(ChangeKind.DELETE, path, None)
        else:
            assert f1 is not None and f2 is not None
            (p1, s1), (p2, s2) = f1, f2
            f1 = next(a, None)
            f2 = next(b, None)
            rmdir = p1 + "/" if stat.S_ISDIR(s1.st_mode) and not stat.S_ISDIR(s2.st_mode) else ""
            if _same(os.path.join(lower, p1), s1, os.path.join(upper, p2), s2):
                if stat.S_ISDIR(s2.st_mode) or s2.st_nlink <= 1:
                    continue
                yield Change(ChangeKind.UNMODIFIED, p2, s2)
            else:
                yield Change(ChangeKind.MODIFY, p2, s2)


class _ChangeWriter:
    def __init__(self, tw: tarfile.TarFile, source: str) -> None:
        self.tw = tw
        self.source = source
        self.whiteout_time = time.time()
        self.inode_src: dict[tuple[int, int], str] = {}
        self.inode_refs: dict[tuple[int, int], list[str]] = {}
        self.added_dirs: set[str] = set()

    def handle(self, c: Change) -> None:
        if c.kind is ChangeKind.DELETE:
            d, _, base = c.path.rpartition("/")
            ti = tarfile.TarInfo((d + "/" if d else "") + ".wh." + base)
            ti.type = tarfile.REGTYPE
            ti.mtime = self.whiteout_time
            ti.mode = 0o644
            self._include_parents(ti.name)
            self.tw.addfile(ti)
            return
        st = c.st
        assert st is not None
        if stat.S_ISSOCK(st.st_mode):
            return
        src = os.path.join(self.source, c.path)
        name = c.path + ("/" if stat.S_ISDIR(st.st_mode) else "")
        ti = tarfile.TarInfo(name)
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""
        ti.mtime = st.st_mtime_ns // 1_000_000_000
        if stat.S_ISDIR(st.st_mode):
            ti.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            ti.type = tarfile.SYMTYPE
            ti.linkname = os.readlink(src)
        elif stat.S_ISREG(st.st_mode):
            ti.type = tarfile.REGTYPE
            ti.size = st.st_size
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(st.st_mode):
            ti.type = tarfile.FIFOTYPE
        else:
            return

        extra: list[str] = []
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            first = self.inode_src.get(key)
            if first is not None:
                ti.type = tarfile.LNKTYPE
                ti.linkname = first
                ti.size = 0
            elif c.kind is ChangeKind.UNMODIFIED:
                self.inode_refs.setdefault(key, []).append(name)
                return
            else:
                self.inode_src[key] = name
                extra = self.inode_refs.pop(key, [])
        elif c.kind is ChangeKind.UNMODIFIED:
            return

        cap = _cap(src)
        if cap:
            ti.pax_headers = {"SCHILY.xattr." + _CAP: cap.decode("utf-8", "surrogateescape")}
        self._include_parents(ti.name, is_dir=ti.type == tarfile.DIRTYPE)
        if ti.type == tarfile.REGTYPE and ti.size > 0:
            with open(src, "rb") as f:
                self.tw.addfile(ti, f)
        else:
            self.tw.addfile(ti)
        for other in extra:
            link = tarfile.TarInfo(other)
            link.type = tarfile.LNKTYPE
            link.linkname = name
            link.mode, link.uid, link.gid, link.mtime = ti.mode, ti.uid, ti.gid, ti.mtime
            link.uname = link.gname = ""
            self._include_parents(other)
            self.tw.addfile(link)

    def _include_parents(self, name: str, *, is_dir: bool = False) -> None:
        name = name.rstrip("/")
        parent = name.rpartition("/")[0]
        if parent and parent not in self.added_dirs:
            self.added_dirs.add(parent)
            st = os.stat(os.path.join(self.source, parent))
            self.handle(Change(ChangeKind.MODIFY, parent, st))
        if is_dir:
            self.added_dirs.add(name)


def write_diff(out: BinaryIO, lower: str, upper: str) -> None:
    """Write the layer that turns ``lower`` into ``upper`` as a PAX tar to ``out``."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tw:
        cw = _ChangeWriter(tw, upper)
        for c in changes(lower, upper):
            cw.handle(c)
