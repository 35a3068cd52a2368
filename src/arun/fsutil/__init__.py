"""Filesystem helpers shared by the snapshotters and the differ (blocking; run them in threads).

* ``disk_usage`` — du-like: distinct inodes and allocated bytes, hard links counted once
  (continuity's ``fs.DiskUsage``);
* ``copy_dir`` — a faithful tree copy: modes, owners, times, xattrs, hard links,
  symlinks, device nodes and fifos (continuity's ``fs.CopyDir``);
* ``supports_d_type`` — whether a filesystem reports file types in directory
  entries, which overlayfs needs.

This package sits in the same import layer as ``arun.mount``.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import stat
import struct
import tempfile

__all__ = ["copy_dir", "copy_xattrs", "disk_usage", "supports_d_type"]

log = logging.getLogger(__name__)


def disk_usage(*roots: str) -> tuple[int, int]:
    """``(inodes, bytes)`` used under ``roots`` (the roots included), each inode once."""
    seen: set[tuple[int, int]] = set()
    size = 0
    for root in roots:
        st = os.lstat(root)
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            size += st.st_blocks * 512
        if not stat.S_ISDIR(st.st_mode):
            continue
        stack = [root]
        while stack:
            d = stack.pop()
            with os.scandir(d) as it:
                for e in it:
                    est = e.stat(follow_symlinks=False)
                    key = (est.st_dev, est.st_ino)
                    if key not in seen:
                        seen.add(key)
                        size += est.st_blocks * 512
                    if stat.S_ISDIR(est.st_mode):
                        stack.append(e.path)
    return len(seen), size


def copy_xattrs(src: str, dst: str) -> None:
    """Copy extended attributes (not following symlinks); failures are logged and skipped."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.ENODATA):
            log.debug("listxattr %s: %s", src, e)
        return
    for name in names:
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as e:
            log.debug("copy xattr %s of %s: %s", name, src, e)


def _copy_owner(st: os.stat_result, dst: str) -> None:
    try:
        os.lchown(dst, st.st_uid, st.st_gid)
    except PermissionError:
        cur = os.lstat(dst)
        if (cur.st_uid, cur.st_gid) != (st.st_uid, st.st_gid):
            raise


def _copy_info(st: os.stat_result, src: str, dst: str) -> None:
    _copy_owner(st, dst)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    copy_xattrs(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_data(src: str, dst: str, mode: int) -> None:
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode & 0o7777)
        try:
            remaining = os.fstat(sfd).st_size
            use_cfr = True
            while remaining > 0:
                n = 0
                if use_cfr:
                    try:
                        n = os.copy_file_range(sfd, dfd, min(remaining, 1 << 30))
                    except OSError as e:
                        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                            raise
                        use_cfr = False
                        continue
                else:
                    buf = os.read(sfd, 1 << 20)
                    n = len(buf)
                    view = memoryview(buf)
                    while view:
                        view = view[os.write(dfd, view) :]
                if n == 0:
                    break  # the source shrank while copying
                remaining -= n
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def copy_dir(src: str, dst: str) -> None:
    """Copy the tree ``src`` into the existing directory ``dst`` (which takes ``src``'s metadata)."""
    st = os.lstat(src)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "source is not a directory", src)
    os.makedirs(dst, exist_ok=True)
    links: dict[tuple[int, int], str] = {}
    # Iterative DFS; a directory's metadata is applied after its children, so its mtime sticks.
    pending: list[tuple[str, str, os.stat_result, bool]] = [(src, dst, st, False)]
    while pending:
        s, d, sst, done = pending.pop()
        if done:
            _copy_info(sst, s, d)
            continue
        pending.append((s, d, sst, True))
        with os.scandir(s) as it:
            entries = list(it)
        for e in entries:
            sp = e.path
            dp = os.path.join(d, e.name)
            est = e.stat(follow_symlinks=False)
            mode = est.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(dp, 0o700)
                pending.append((sp, dp, est, False))
                continue
            key = (est.st_dev, est.st_ino)
            if est.st_nlink > 1 and key in links:
                os.link(links[key], dp, follow_symlinks=False)
                continue
            if stat.S_ISREG(mode):
                _copy_data(sp, dp, mode)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(sp), dp)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                os.mknod(dp, mode, est.st_rdev)
            else:
                raise OSError(errno.EINVAL, f"unsupported file type {oct(stat.S_IFMT(mode))}", sp)
            _copy_info(est, sp, dp)
            if est.st_nlink > 1:
                links[key] = dp


_GETDENTS64 = {"x86_64": 217, "aarch64": 61, "ppc64le": 202, "s390x": 220, "riscv64": 61}
_DT_UNKNOWN = 0


def supports_d_type(path: str) -> bool:
    """Whether the filesystem of directory ``path`` fills ``d_type`` in getdents64 results."""
    nr = _GETDENTS64.get(platform.machine())
    if nr is None:
        return True  # cannot tell; assume a modern filesystem
    libc = ctypes.CDLL(None, use_errno=True)
    with tempfile.TemporaryDirectory(prefix="d_type-check-", dir=path) as td:
        with open(os.path.join(td, "file"), "w"):
            pass
        fd = os.open(td, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            buf = ctypes.create_string_buffer(4096)
            n = libc.syscall(nr, fd, buf, len(buf))
            if n < 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e), td)
            raw = buf.raw[:n]
        finally:
            os.close(fd)
    off = 0
    while off < len(raw):
        _ino, _doff, reclen, dtype = struct.unpack_from("=QqHB", raw, off)
        name = raw[off + 19 : off + reclen].split(b"\0", 1)[0]
        if name == b"file":
            return bool(dtype != _DT_UNKNOWN)
        off += reclen
    return False
