"""Bundle directories: where a shim finds a task's config and rootfs.

Laid out as containerd lays them out (``core/runtime/v2/bundle.go``):

* ``<state>/<ns>/<id>`` (0700), the shim's working directory: ``config.json`` (the OCI
  spec), ``rootfs/`` (empty; the shim mounts the rootfs there), ``work`` → the work dir,
  and later ``log`` (the shim log FIFO), ``bootstrap.json``, ``shim-binary-path``;
* ``<root>/<ns>/<id>`` (0711), the work directory, which survives reboots.

Deleting a bundle unmounts whatever is still mounted on ``rootfs``, renames each
directory to ``.<id>`` (so a crash half-way leaves a hidden directory that a restart
skips) and removes it. Every function here blocks: call through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from arun import identifiers
from arun.errdefs import AlreadyExistsError, NotFoundError

log = logging.getLogger(__name__)

CONFIG = "config.json"
ROOTFS = "rootfs"
WORK = "work"
LOG = "log"
BOOTSTRAP = "bootstrap.json"
SHIM_BINARY_PATH = "shim-binary-path"
# Written by 1.x shims (and arun's): the shim's address, read when bootstrap.json is missing.
ADDRESS = "address"
SHIM_PID = "shim.pid"

MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

_libc: ctypes.CDLL | None = None


def _umount2(target: str, flags: int) -> int:
    """umount2(2); 0 or the errno."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.umount2(os.fsencode(target), flags) == 0:
        return 0
    return ctypes.get_errno()


def unmount_all(target: str | Path, flags: int = 0) -> None:
    """Unmount every mount stacked on ``target`` (none is fine).

    A busy mount is detached lazily rather than left behind.
    """
    path = os.fspath(target)
    for _ in range(64):
        err = _umount2(path, flags | UMOUNT_NOFOLLOW)
        if err == 0:
            continue
        if err == errno.EBUSY and not flags & MNT_DETACH:
            flags |= MNT_DETACH
            continue
        if err in (errno.EINVAL, errno.ENOENT):
            return  # not (or no longer) a mount point
        raise OSError(err, f"unmount: {os.strerror(err)}", path)
    raise OSError(errno.EBUSY, "unmount: still mounted after 64 unmounts", path)


@dataclass(frozen=True)
class Bundle:
    id: str
    namespace: str
    path: Path
    work: Path

    @property
    def rootfs(self) -> Path:
        return self.path / ROOTFS

    def file(self, name: str) -> Path:
        return self.path / name

    def read(self, name: str) -> str | None:
        """A small file of the bundle, or None if it does not exist."""
        try:
            return (self.path / name).read_text()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: str | bytes, mode: int = 0o600) -> None:
        """Write a file of the bundle atomically (temp file and rename)."""
        tmp = self.path / f".{name}.tmp"
        raw = data.encode() if isinstance(data, str) else data
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.write(fd, raw)
        finally:
            os.close(fd)
        os.replace(tmp, self.path / name)

    def delete(self) -> None:
        """Unmount whatever is mounted in the bundle and remove both directories (missing ones
        are fine). Refuses (OSError) to remove a directory that still has a mount inside:
        removing files through a bind mount would destroy its source."""
        with contextlib.suppress(FileNotFoundError):
            unmount_all(self.rootfs)
        _remove(self.path)
        _remove(self.work)


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: str | Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    top = os.path.realpath(path)
    found: list[str] = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split(" ")
                if len(fields) < 5:
                    continue
                point = _unescape(fields[4])
                if point == top or point.startswith(top + "/"):
                    found.append(point)
    except OSError:
        return []
    return sorted(found, key=len, reverse=True)


def _remove(path: Path) -> None:
    hidden = path.with_name("." + path.name)
    try:
        os.rename(path, hidden)
    except FileNotFoundError:
        if not hidden.exists():
            return
    for point in mounts_under(hidden):
        unmount_all(point, MNT_DETACH)
    left = mounts_under(hidden)
    if left:
        raise OSError(errno.EBUSY, f"still mounted: {', '.join(left)}", str(hidden))
    shutil.rmtree(hidden)


def paths(root: Path, state: Path, namespace: str, id: str) -> tuple[Path, Path]:
    identifiers.validate(namespace)
    identifiers.validate(id)
    return state / namespace / id, root / namespace / id


def _userns_root_gid(spec: bytes) -> int:
    """The host gid of gid 0 in the spec's user namespace (0 without one)."""
    if b"gidMappings" not in spec:
        return 0  # most specs: no need to parse a few KiB of JSON on the Create path
    try:
        doc = json.loads(spec)
        maps = (doc.get("linux") or {}).get("gidMappings") or []
        for m in maps:
            if int(m.get("containerID", -1)) == 0:
                return int(m.get("hostID", 0))
    except (ValueError, TypeError, AttributeError):
        pass
    return 0


def create(root: Path, state: Path, namespace: str, id: str, spec: bytes) -> Bundle:
    """Make the bundle of task ``id``; AlreadyExistsError if one exists. Nothing is left
    behind on failure."""
    path, work = paths(root, state, namespace, id)
    for parent in (path.parent, work.parent):
        parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    made: list[Path] = []
    try:
        try:
            work.mkdir(mode=0o711)
        except FileExistsError:
            # A leftover work dir of a task that is gone (its bundle is checked next).
            if path.exists():
                raise
            shutil.rmtree(work)
            work.mkdir(mode=0o711)
        made.append(work)
        path.mkdir(mode=0o700)
        made.append(path)
        gid = _userns_root_gid(spec)
        if gid:
            # runc, as the root of the task's user namespace, must reach rootfs/ through the
            # bundle: that root's group may traverse it (as containerd does).
            os.chown(path, -1, gid)
            os.chmod(path, 0o710)
        (path / ROOTFS).mkdir(mode=0o711)
        os.symlink(work, path / WORK)
        b = Bundle(id, namespace, path, work)
        b.write(CONFIG, spec, 0o666)
        return b
    except FileExistsError:
        for p in reversed(made):
            shutil.rmtree(p, ignore_errors=True)
        raise AlreadyExistsError(f"bundle of task {id!r} in namespace {namespace!r} already exists") from None
    except BaseException:
        for p in reversed(made):
            shutil.rmtree(p, ignore_errors=True)
        raise


def load(root: Path, state: Path, namespace: str, id: str) -> Bundle:
    path, work = paths(root, state, namespace, id)
    if not path.is_dir():
        raise NotFoundError(f"bundle of task {id!r} in namespace {namespace!r} not found")
    return Bundle(id, namespace, path, work)
