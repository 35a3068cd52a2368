"""Linux mounts: ``LinuxMounter`` (mount(2)/umount2(2) through libc) and temporary mounts.

The option handling follows containerd's ``mount_linux.go``: known mount(8)
flag words become ``MS_*`` flags, everything else is joined into the data
string; propagation flags are applied with a second call, and a read-only
bind is remounted read-only (the kernel ignores ``MS_RDONLY`` on the first
bind call). An overlay whose ``lowerdir=`` list would not fit in one page is
mounted with the lower dirs relative to their common parent, from a
``mount(8)`` child that runs in that directory (containerd forks for the same
reason): chdir would affect every thread of this process.

This package sits beside ``arun.oci``/``arun.log`` in the import layers: the
snapshotters, the differ, the runtime and the shim may all use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence

from arun.asyncutil import to_thread_complete
from arun.core.mount import MNT_DETACH, Mount, Mounter, mount_all, unmount_all

__all__ = [
    "MNT_DETACH",
    "LinuxMounter",
    "MountError",
    "is_mountpoint",
    "parse_options",
    "temp_mount",
]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

_PROPAGATION = MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE

# word -> (clear?, flag), as mount(8) understands them.
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
    "private": (False, MS_PRIVATE),
    "rprivate": (False, MS_PRIVATE | MS_REC),
    "shared": (False, MS_SHARED),
    "rshared": (False, MS_SHARED | MS_REC),
    "slave": (False, MS_SLAVE),
    "rslave": (False, MS_SLAVE | MS_REC),
    "unbindable": (False, MS_UNBINDABLE),
    "runbindable": (False, MS_UNBINDABLE | MS_REC),
}

_PAGESIZE = os.sysconf("SC_PAGESIZE")


class MountError(OSError):
    """A mount or unmount syscall failed; ``errno`` is the kernel's."""


def parse_options(options: Sequence[str]) -> tuple[int, str]:
    """``(flags, data)`` for mount(2) from mount(8)-style option words."""
    flags = 0
    data: list[str] = []
    for o in options:
        f = _FLAGS.get(o)
        if f is not None:
            clear, bit = f
            if clear:
                flags &= ~bit
            else:
                flags |= bit
        else:
            data.append(o)
    return flags, ",".join(data)


def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    lib.mount.restype = ctypes.c_int
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.umount2.restype = ctypes.c_int
    return lib


_LIBC: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = _libc()
    return _LIBC


def _enc(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def _sys_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    rc = _lib().mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data) if data else None)
    if rc != 0:
        e = ctypes.get_errno()
        raise MountError(e, f"mount {fstype or 'flags'} {source!r} on {target!r}: {os.strerror(e)}")


def _compact_lowerdirs(options: Sequence[str]) -> tuple[str, list[str]]:
    """Rewrite ``lowerdir=`` relative to the lower dirs' common parent (``""`` if not possible)."""
    idx = next((i for i, o in enumerate(options) if o.startswith("lowerdir=")), -1)
    if idx < 0:
        return "", list(options)
    dirs = options[idx][len("lowerdir=") :].split(":")
    if len(dirs) < 2:
        return "", list(options)
    common = os.path.commonpath(dirs)
    if common in ("", "/"):
        return "", list(options)
    common = common.rstrip("/") + "/"
    rel = [d[len(common) :] for d in dirs]
    out = [o for i, o in enumerate(options) if i != idx]
    out.append("lowerdir=" + ":".join(rel))
    return common, out


class LinuxMounter:
    """The real ``Mounter``: mount(2)/umount2(2) via libc (root only)."""

    def mount(self, m: Mount, target: str) -> None:
        options = list(m.options)
        chdir = ""
        if m.type == "overlay" and sum(len(o) for o in options) >= _PAGESIZE - 512:
            chdir, options = _compact_lowerdirs(options)
        flags, data = parse_options(options)
        if len(data) > _PAGESIZE:
            raise MountError(errno.E2BIG, f"mount options of {target!r} are too long ({len(data)} bytes)")
        oflags = flags & ~_PROPAGATION
        if not (flags & MS_REMOUNT) or data:
            if chdir:
                self._mount_in(chdir, m, target, options)
            else:
                fstype = "" if oflags & MS_BIND else m.type
                _sys_mount(m.source, target, fstype, oflags, data)
        if flags & _PROPAGATION:
            _sys_mount("", target, "", flags & (_PROPAGATION | MS_REC | MS_SILENT), "")
        if oflags & (MS_BIND | MS_RDONLY) == MS_BIND | MS_RDONLY:
            _sys_mount("", target, "", oflags | MS_REMOUNT, "")

    @staticmethod
    def _mount_in(cwd: str, m: Mount, target: str, options: list[str]) -> None:
        # Relative lowerdirs resolve against the cwd of the process calling mount(2).
        binary = shutil.which("mount") or "/bin/mount"
        _, data = parse_options(options)
        flag_words = [o for o in options if o in _FLAGS and o not in ("rw",)]
        opt = ",".join([*flag_words, data]) if data else ",".join(flag_words)
        proc = subprocess.run(
            [binary, "-n", "-t", m.type, "-o", opt, m.source, os.path.abspath(target)],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            detail = proc.stderr.strip()
            raise MountError(errno.EINVAL, f"mount {m.type} on {target!r} from {cwd!r}: {detail}")

    def unmount(self, target: str, flags: int = 0) -> None:
        for _ in range(50):
            rc = _lib().umount2(_enc(target), flags)
            if rc == 0:
                return
            e = ctypes.get_errno()
            if e in (errno.EINVAL, errno.ENOENT):
                return  # not a mount point (any more)
            if e == errno.EBUSY:
                time.sleep(0.05)
                continue
            raise MountError(e, f"unmount {target!r}: {os.strerror(e)}")
        raise MountError(errno.EBUSY, f"unmount {target!r}: {os.strerror(errno.EBUSY)}")

    def unmount_recursive(self, target: str, flags: int = 0) -> None:
        """Unmount every mount stacked on ``target``."""
        while is_mountpoint(target):
            self.unmount(target, flags)


def is_mountpoint(path: str) -> bool:
    """Whether ``path`` is a mount point, judged from /proc/self/mountinfo."""
    want = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                fields = line.split(b" ")
                if len(fields) > 4 and _unescape(fields[4]) == want:
                    return True
    except FileNotFoundError:
        return os.path.ismount(path)
    return False


def _unescape(b: bytes) -> str:
    s = os.fsdecode(b)
    if "\\" not in s:
        return s
    out = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


@contextlib.asynccontextmanager
async def temp_mount(
    mounts: Sequence[Mount], *, mounter: Mounter | None = None, root: str | None = None
) -> AsyncIterator[str]:
    """Mount ``mounts`` on a fresh directory under ``root`` (default: the temp dir) and yield it.

    Unmounting and removing the directory complete even if the caller is
    cancelled; if the unmount fails the directory is left in place (never
    removed recursively while something may still be mounted on it).
    """
    mnt = mounter if mounter is not None else LinuxMounter()
    d = await asyncio.to_thread(tempfile.mkdtemp, prefix="arun-mount-", dir=root)
    mounted = False

    def cleanup() -> None:
        if mounted:
            unmount_all(mnt, mounts, d)
        os.rmdir(d)

    try:
        await to_thread_complete(mount_all, mnt, mounts, d)
        mounted = True
        yield d
    finally:
        await to_thread_complete(cleanup)
