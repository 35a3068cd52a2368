"""Applying a layer tar to a directory, without ever writing outside it.

The semantics are containerd's ``archive.Apply``: entries replace what is
there (directories merge), ``.wh.<name>`` deletes ``<name>``,
``.wh..wh..opq`` makes a directory opaque, and owners, modes, xattrs
(PAX ``SCHILY.xattr.*``) and times are restored, directory times last.
With ``overlay_whiteouts`` (applying straight into an overlay upper dir)
whiteouts become overlayfs' own: a 0/0 character device for a deleted
name, ``trusted.overlay.opaque=y`` for an opaque directory.

Safety. Every path is resolved inside the root one component at a time
from directory file descriptors opened with ``O_NOFOLLOW``; every change is
made with ``*at`` calls relative to the parent's descriptor, never through a
path string that the kernel would resolve for us. So a name that is
absolute or contains ``..``, a parent component that is a symlink (whether
it points inside or out), a hard link whose target is outside or behind a
symlink, or a whiteout naming ``..`` is refused with InvalidArgumentError
before anything is written for that entry. An existing entry is unlinked
before a new one is created with ``O_EXCL|O_NOFOLLOW``, so a symlink, fifo
or hard link left by an earlier entry (or layer) is never written through.
``trusted.*`` xattrs from an archive are ignored (they steer overlayfs).

This is blocking, CPU-heavy work: run it in a worker thread.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from arun.errdefs import InvalidArgumentError

__all__ = ["ApplyOptions", "ApplyStats", "Cancelled", "apply_tar", "split_name"]

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
PAX_XATTR = "SCHILY.xattr."
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_MAX_CACHED_DIRS = 4096
# Go's time bounds for tar times (containerd's boundTime): outside them, the epoch.
_MAX_NS = (1 << 63) - 1


def _read_umask() -> int:
    """This process's umask without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o7777  # unknown: always chmod


class Cancelled(Exception):
    """The apply was cancelled between two entries."""


@dataclass
class ApplyOptions:
    # Convert whiteouts to overlayfs form (the root is an overlay upper dir).
    overlay_whiteouts: bool = False
    # Lower dirs (nearest first): implicit parent directories copy their metadata from there.
    parents: Sequence[str] = ()
    # Restore owners (and create device nodes); off when not root.
    same_owner: bool = field(default_factory=lambda: os.geteuid() == 0)
    cancel: threading.Event | None = None


@dataclass
class ApplyStats:
    entries: int = 0
    size: int = 0  # sum of entry sizes, as containerd's Apply returns


def _bad(name: str, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"invalid tar entry {name!r}: {why}")


def split_name(name: str) -> tuple[str, ...]:
    """The components of a tar entry name; absolute names and ``..`` are refused."""
    if "\0" in name:
        raise _bad(name, "contains a NUL byte")
    if name.startswith("/"):
        raise _bad(name, "absolute paths are not allowed")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _bad(name, "'..' is not allowed")
    return parts


def _time_ns(ti: tarfile.TarInfo, key: str, fallback: float) -> int:
    raw = ti.pax_headers.get(key)
    if raw is not None:
        try:
            ns = int(Decimal(raw) * 1_000_000_000)
        except (InvalidOperation, ValueError):
            ns = int(fallback * 1e9)
    else:
        ns = int(fallback * 1e9)
    return ns if 0 <= ns <= _MAX_NS else 0


def _xattrs(ti: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for k, v in ti.pax_headers.items():
        if k.startswith(PAX_XATTR):
            out.append((k[len(PAX_XATTR) :], v.encode("utf-8", "surrogateescape")))
    return out


class _Tree:
    """Directory descriptors inside one root, opened component by component without following symlinks."""

    def __init__(self, root: str, opts: ApplyOptions) -> None:
        self.root = root
        self.opts = opts
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._fds: dict[tuple[str, ...], int] = {(): self.root_fd}
        # Directories (by open descriptor) whose set-group-ID bit gives new files their group.
        self._setgid: dict[int, bool] = {}

    def setgid(self, fd: int) -> bool:
        """Whether the directory ``fd`` has the set-group-ID bit (cached per descriptor)."""
        v = self._setgid.get(fd)
        if v is None:
            v = self._setgid[fd] = bool(os.fstat(fd).st_mode & stat.S_ISGID)
        return v

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._setgid.clear()

    def forget(self, parts: tuple[str, ...]) -> None:
        """Drop cached descriptors of ``parts`` and everything below (it was removed or replaced)."""
        n = len(parts)
        for k in [k for k in self._fds if len(k) >= n and k[:n] == parts and k]:
            fd = self._fds.pop(k)
            self._setgid.pop(fd, None)
            os.close(fd)

    def _open_child(self, parent_fd: int, parts: tuple[str, ...], name: str) -> int:
        try:
            return os.open(parts[-1], _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            raise
        except OSError as e:
            if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
        st = os.lstat(parts[-1], dir_fd=parent_fd)
        shown = "/".join(parts)
        if stat.S_ISLNK(st.st_mode):
            raise _bad(name, f"path component {shown!r} is a symlink; refusing to follow it")
        raise _bad(name, f"path component {shown!r} is not a directory")

    def dir_fd(self, parts: tuple[str, ...], name: str, *, create: bool) -> int:
        """A descriptor of the directory ``parts``; missing components are created if ``create``."""
        fd = self._fds.get(parts)
        if fd is not None:
            return fd
        if len(self._fds) > _MAX_CACHED_DIRS:
            self.forget_all()
        i = len(parts)
        while i > 0 and parts[:i] not in self._fds:
            i -= 1
        fd = self._fds[parts[:i]]
        for j in range(i + 1, len(parts) + 1):
            sub = parts[:j]
            try:
                child = self._open_child(fd, sub, name)
            except FileNotFoundError:
                if not create:
                    raise _bad(name, f"{'/'.join(sub)!r} does not exist") from None
                os.mkdir(sub[-1], 0o755, dir_fd=fd)
                self._inherit(sub, fd)
                child = self._open_child(fd, sub, name)
            self._fds[sub] = child
            fd = child
        return fd

    def forget_all(self) -> None:
        for k in [k for k in self._fds if k]:
            fd = self._fds.pop(k)
            self._setgid.pop(fd, None)
            os.close(fd)

    def _inherit(self, sub: tuple[str, ...], parent_fd: int) -> None:
        """Give an implicitly created directory the metadata of the same directory in a lower layer."""
        for lower in self.opts.parents:
            try:
                st, path = _lstat_beneath(lower, sub)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break
            name = sub[-1]
            if self.opts.same_owner:
                os.chown(name, st.st_uid, st.st_gid, dir_fd=parent_fd, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=parent_fd)
            target = _proc_path(parent_fd, name)
            try:
                for key in os.listxattr(path, follow_symlinks=False):
                    if key.startswith("trusted."):
                        continue
                    os.setxattr(
                        target, key, os.getxattr(path, key, follow_symlinks=False), follow_symlinks=False
                    )
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.ENODATA):
                    raise
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=parent_fd, follow_symlinks=False)
            return


def _lstat_beneath(root: str, parts: tuple[str, ...]) -> tuple[os.stat_result, str]:
    """lstat ``parts`` under ``root`` without following a symlink on the way (a symlink is "not found")."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for comp in parts[:-1]:
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise FileNotFoundError(errno.ENOENT, "not found beneath", root) from e
            os.close(fd)
            fd = nfd
        st = os.lstat(parts[-1], dir_fd=fd)
        return st, os.path.join(root, *parts)
    finally:
        os.close(fd)


def _proc_path(dir_fd: int, name: str) -> str:
    # The directory is pinned by its descriptor; only the last component is looked up (not followed).
    return f"/proc/self/fd/{dir_fd}/{name}"


def _remove(parent_fd: int, name: str) -> None:
    """Remove ``name`` (any type, recursively) from the directory ``parent_fd``; absent is fine."""
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent_fd)
    else:
        os.unlink(name, dir_fd=parent_fd)


class _Applier:
    def __init__(self, root: str, opts: ApplyOptions) -> None:
        self.opts = opts
        self.tree = _Tree(root, opts)
        self.unpacked: set[tuple[str, ...]] = set()
        # Directories of this layer: their mode and times are set at the end.
        self.dirs: list[tuple[tuple[str, ...], int, int, int]] = []
        self.stats = ApplyStats()
        self.is_root = os.geteuid() == 0
        self.uid = os.geteuid()
        self.gid = os.getegid()
        self.umask = _read_umask()

    def run(self, reader: Any) -> ApplyStats:
        try:
            self._entries(reader)
            self._finish_dirs()
        finally:
            self.tree.close()
        return self.stats

    def _entries(self, reader: Any) -> None:
        head = reader.read(tarfile.BLOCKSIZE)
        if not head.strip(b"\0"):
            return  # an empty archive (no data, or an end-of-archive block): nothing to apply
        reader.unread(head)
        try:
            tf = tarfile.TarFile(fileobj=reader, mode="r")
        except tarfile.TarError as e:
            raise InvalidArgumentError(f"invalid tar archive: {e}") from e
        while True:
            if self.opts.cancel is not None and self.opts.cancel.is_set():
                raise Cancelled()
            try:
                ti = tf.next()
            except tarfile.TarError as e:
                raise InvalidArgumentError(f"invalid tar archive: {e}") from e
            if ti is None:
                break
            tf.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every member otherwise
            self.stats.entries += 1
            self.stats.size += ti.size
            self._entry(tf, ti, reader)

    def _entry(self, tf: tarfile.TarFile, ti: tarfile.TarInfo, reader: Any) -> None:
        name = ti.name
        parts = split_name(name)
        if not parts:
            return  # the root itself, as containerd ignores it
        parent, base = parts[:-1], parts[-1]
        pfd = self.tree.dir_fd(parent, name, create=True)

        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(ti, parts, pfd)
            return

        if ti.type not in _SUPPORTED:
            raise _bad(name, f"unsupported tar entry type {ti.type!r}")
        if "\0" in ti.linkname:
            raise _bad(name, "link target contains a NUL byte")

        # Validate a hard link's target before touching anything for this entry.
        link_fd = -1
        link_base = ""
        if ti.type == tarfile.LNKTYPE:
            lparts = split_name(ti.linkname)
            if not lparts:
                raise _bad(name, "hard link to the root")
            link_fd = self.tree.dir_fd(lparts[:-1], name, create=False)
            link_base = lparts[-1]
            try:
                lst = os.lstat(link_base, dir_fd=link_fd)
            except FileNotFoundError:
                raise _bad(name, f"hard link target {ti.linkname!r} not found in the layer") from None
            if stat.S_ISDIR(lst.st_mode):
                raise _bad(name, f"hard link target {ti.linkname!r} is a directory")
            if lparts == parts:
                return  # a link to itself: nothing to do

        if ti.isreg() and ti.sparse is None and self._regular_file(ti, reader, parts, pfd, base):
            return

        try:
            existing = os.lstat(base, dir_fd=pfd)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (stat.S_ISDIR(existing.st_mode) and ti.isdir()):
            _remove(pfd, base)
            self.tree.forget(parts)

        mode = ti.mode & 0o7777
        mtime = _time_ns(ti, "mtime", ti.mtime)
        atime = max(_time_ns(ti, "atime", ti.mtime), mtime)

        if ti.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(base, 0o700, dir_fd=pfd)
            self._own_and_xattrs(ti, pfd, base, -1)
            self.dirs.append((parts, mode, atime, mtime))
        elif ti.isreg():
            fd = os.open(
                base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd
            )
            try:
                if ti.sparse is not None:
                    self._copy(tf.extractfile(ti), fd, ti)
                else:
                    self._copy(reader, fd, ti)
                self._own_and_xattrs(ti, pfd, base, fd)
                os.fchmod(fd, mode)
                os.utime(fd, ns=(atime, mtime))
            finally:
                os.close(fd)
        elif ti.issym():
            os.symlink(ti.linkname, base, dir_fd=pfd)
            self._own_and_xattrs(ti, pfd, base, -1)
            os.utime(base, ns=(atime, mtime), dir_fd=pfd, follow_symlinks=False)
        elif ti.islnk():
            os.link(link_base, base, src_dir_fd=link_fd, dst_dir_fd=pfd, follow_symlinks=False)
            self._own_and_xattrs(ti, pfd, base, -1)
            if not stat.S_ISLNK(os.lstat(base, dir_fd=pfd).st_mode):
                os.chmod(base, mode, dir_fd=pfd)
            os.utime(base, ns=(atime, mtime), dir_fd=pfd, follow_symlinks=False)
        else:  # character/block device or fifo
            kind = {
                tarfile.CHRTYPE: stat.S_IFCHR,
                tarfile.BLKTYPE: stat.S_IFBLK,
                tarfile.FIFOTYPE: stat.S_IFIFO,
            }
            if ti.type != tarfile.FIFOTYPE and not self.is_root:
                log.warning("device node %r skipped: creating device nodes needs root", name)
                return
            os.mknod(base, mode | kind[ti.type], os.makedev(ti.devmajor, ti.devminor), dir_fd=pfd)
            self._own_and_xattrs(ti, pfd, base, -1)
            os.chmod(base, mode, dir_fd=pfd)
            os.utime(base, ns=(atime, mtime), dir_fd=pfd, follow_symlinks=False)
        self.unpacked.add(parts)

    def _regular_file(
        self, ti: tarfile.TarInfo, reader: Any, parts: tuple[str, ...], pfd: int, base: str
    ) -> bool:
        """The common case of a regular file whose name is free, in as few system calls as
        containerd makes: created exclusively (never through a link) with its final mode
        when the umask keeps it, owner set only when creation did not already give the
        right one. False, with nothing done, when the name exists (the general path then
        replaces it)."""
        mode = ti.mode & 0o7777
        direct = mode & 0o7000 == 0 and mode & self.umask == 0
        try:
            fd = os.open(
                base,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                mode if direct else 0o600,
                dir_fd=pfd,
            )
        except FileExistsError:
            return False
        try:
            self._copy(reader, fd, ti)
            chown = self.opts.same_owner and (
                ti.uid != self.uid or ti.gid != self.gid or self.tree.setgid(pfd)
            )
            if chown or any(k.startswith(PAX_XATTR) for k in ti.pax_headers):
                self._own_and_xattrs(ti, pfd, base, fd)
            if not direct:
                os.fchmod(fd, mode)
            mtime = _time_ns(ti, "mtime", ti.mtime)
            os.utime(fd, ns=(max(_time_ns(ti, "atime", ti.mtime), mtime), mtime))
        finally:
            os.close(fd)
        self.unpacked.add(parts)
        return True

    @staticmethod
    def _copy(src: Any, fd: int, ti: tarfile.TarInfo) -> None:
        remaining = ti.size
        while remaining > 0:
            chunk = src.read(min(remaining, _CHUNK))
            if not chunk:
                raise _bad(ti.name, "unexpected end of data")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            remaining -= len(chunk)

    def _own_and_xattrs(self, ti: tarfile.TarInfo, pfd: int, base: str, fd: int) -> None:
        if self.opts.same_owner:
            if fd >= 0:
                os.fchown(fd, ti.uid, ti.gid)
            else:
                os.chown(base, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)
        xattrs = _xattrs(ti)
        if not xattrs:
            return
        target: int | str = fd if fd >= 0 else _proc_path(pfd, base)
        for key, value in xattrs:
            if key.startswith("trusted."):
                log.warning(
                    "ignored xattr %s of %r: admin attributes from archives are not supported", key, ti.name
                )
                continue
            try:
                if isinstance(target, int):
                    os.setxattr(target, key, value)
                else:
                    os.setxattr(target, key, value, follow_symlinks=False)
            except OSError as e:
                if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) or (
                    e.errno == errno.EPERM and key.startswith("user.") and not (ti.isreg() or ti.isdir())
                ):
                    log.warning("ignored xattr %s of %r: %s", key, ti.name, e)
                    continue
                raise

    def _whiteout(self, ti: tarfile.TarInfo, parts: tuple[str, ...], pfd: int) -> None:
        parent, base = parts[:-1], parts[-1]
        if base == WHITEOUT_OPAQUE:
            if self.opts.overlay_whiteouts:
                os.setxattr(_proc_path(pfd, "."), OVERLAY_OPAQUE_XATTR, b"y", follow_symlinks=False)
            else:
                for child in os.listdir(_proc_path(pfd, ".")):
                    if (*parent, child) not in self.unpacked:
                        _remove(pfd, child)
                        self._forget((*parent, child))
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            log.debug("ignored whiteout meta entry %r", ti.name)
            return
        target = base[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise _bad(ti.name, "whiteout does not name an entry in its directory")
        _remove(pfd, target)
        self._forget((*parent, target))
        if self.opts.overlay_whiteouts:
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            if self.opts.same_owner:
                os.chown(target, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)

    def _forget(self, parts: tuple[str, ...]) -> None:
        """A whiteout removed ``parts``: drop what was remembered of it and below it, so that
        the mode and times of a removed directory never land on a later one of the same name."""
        self.tree.forget(parts)
        n = len(parts)
        self.dirs = [d for d in self.dirs if d[0][:n] != parts]

    def _finish_dirs(self) -> None:
        for parts, mode, atime, mtime in self.dirs:
            try:
                pfd = self.tree.dir_fd(parts[:-1], "/".join(parts), create=False)
                st = os.lstat(parts[-1], dir_fd=pfd)
            except (InvalidArgumentError, FileNotFoundError):
                continue  # removed by a later entry of this layer
            if not stat.S_ISDIR(st.st_mode):
                continue
            os.chmod(parts[-1], mode, dir_fd=pfd)
            os.utime(parts[-1], ns=(atime, mtime), dir_fd=pfd, follow_symlinks=False)


_SUPPORTED = {
    tarfile.REGTYPE,
    tarfile.AREGTYPE,
    tarfile.CONTTYPE,
    tarfile.GNUTYPE_SPARSE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.FIFOTYPE,
}


def apply_tar(root: str, reader: Any, opts: ApplyOptions | None = None) -> ApplyStats:
    """Apply the tar stream ``reader`` (a ``LayerReader``) onto the directory ``root``."""
    return _Applier(root, opts or ApplyOptions()).run(reader)
