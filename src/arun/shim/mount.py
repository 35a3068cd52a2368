"""Mounting a task's rootfs: containerd ``Mount`` records → mount(2), and recursive unmount.

Behind the small :class:`Mounter` Protocol so unit tests use ``arun.testing.shim.RecordingMounter``
and need no root. Options are split the way mount(8) does: known words become MS_* flags
(propagation words are applied by a second call, as the kernel requires), the rest is the
filesystem's data string.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from arun import errdefs

log = logging.getLogger(__name__)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# word -> (clear?, flag)
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
    "nosymfollow": (False, MS_NOSYMFOLLOW),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
_PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Mount:
    """containerd.types.Mount, without the generated type."""

    type: str
    source: str
    options: tuple[str, ...] = ()
    #: Sub-path under the rootfs to mount on (containerd 2.x); empty for the rootfs itself.
    target: str = ""


@dataclass(frozen=True, slots=True)
class ParsedOptions:
    flags: int
    propagation: int
    data: str


def parse_options(options: Iterable[str]) -> ParsedOptions:
    flags = 0
    propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, flag = _FLAGS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in _PROPAGATION:
            propagation |= _PROPAGATION[opt]
        else:
            data.append(opt)
    return ParsedOptions(flags, propagation, ",".join(data))


def target_of(rootfs: str, m: Mount) -> str:
    """Where ``m`` goes: ``rootfs`` or a path under it (never outside)."""
    if not m.target:
        return rootfs
    rel = os.path.normpath("/" + m.target).lstrip("/")
    return os.path.join(rootfs, rel) if rel else rootfs


class Mounter(Protocol):
    def mount(self, m: Mount, target: str) -> None: ...

    def unmount_all(self, target: str) -> None:
        """Unmount ``target`` and everything below it; no error if nothing is mounted."""
        ...


def mount_all(mounter: Mounter, mounts: Sequence[Mount], rootfs: str) -> None:
    """Mount ``mounts`` in order onto ``rootfs``; on failure unmount what was done and raise."""
    try:
        for m in mounts:
            mounter.mount(m, target_of(rootfs, m))
    except BaseException:
        try:
            mounter.unmount_all(rootfs)
        except Exception as exc:  # the mount error is the one to report
            log.warning("cleanup of partial rootfs %s failed: %s", rootfs, exc)
        raise


class SysMounter:
    """mount(2)/umount2(2) through libc."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mount.argtypes = (
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        )
        self._libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)

    def _mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        rc = self._libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() or None,
        )
        if rc != 0:
            err = ctypes.get_errno()
            raise _os_error(err, f"mount {source!r} on {target!r} (type {fstype!r}, data {data!r})")

    def mount(self, m: Mount, target: str) -> None:
        if m.type.startswith(("format/", "mkdir/", "mkfs/")) or "/" in m.type:
            raise errdefs.UnimplementedError(f"mount type {m.type!r} is not supported by the arun shim")
        opts = parse_options(m.options)
        if len(opts.data) >= _PAGE - 1:
            raise errdefs.InvalidArgumentError(
                f"mount options for {target!r} are {len(opts.data)} bytes, more than a page"
            )
        if opts.flags & MS_BIND:
            self._mount(m.source, target, "", opts.flags & ~MS_RDONLY, opts.data)
        else:
            self._mount(m.source, target, m.type, opts.flags, opts.data)
        if opts.flags & MS_BIND and opts.flags & MS_RDONLY:
            # A bind mount ignores MS_RDONLY on creation; it takes a remount to make it read-only.
            self._mount("", target, "", opts.flags | MS_REMOUNT, "")
        if opts.propagation:
            self._mount("", target, "", opts.propagation, "")

    def unmount_all(self, target: str) -> None:
        target = os.path.realpath(target)
        points = [p for p in mountpoints() if p == target or p.startswith(target.rstrip("/") + "/")]
        for point in sorted(points, key=len, reverse=True):
            self._umount(point)

    def _umount(self, path: str) -> None:
        for flags in (0, MNT_DETACH):
            if self._libc.umount2(path.encode(), flags) == 0:
                return
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return  # not (or no longer) a mount point
            if err != errno.EBUSY:
                raise _os_error(err, f"unmount {path!r}")
        raise _os_error(errno.EBUSY, f"unmount {path!r}")


def _os_error(err: int, what: str) -> errdefs.ArunError:
    if err == errno.ENOENT:
        return errdefs.NotFoundError(f"{what}: {os.strerror(err)}")
    if err in (errno.EPERM, errno.EACCES):
        return errdefs.PermissionDeniedError(f"{what}: {os.strerror(err)}")
    if err == errno.EINVAL:
        return errdefs.InvalidArgumentError(f"{what}: {os.strerror(err)}")
    return errdefs.UnknownError(f"{what}: {os.strerror(err)}")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountpoints(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points of this mount namespace, in mount order."""
    with open(mountinfo) as f:
        return [_unescape(line.split(" ", 5)[4]) for line in f if line.strip()]
