"""Persistent, named network namespaces, as containerd's ``pkg/netns``.

A pod's network namespace outlives every process in it because it is
bind-mounted onto an empty file: ``<base_dir>/cni-<random>``. That file is
what CNI plugins get as ``CNI_NETNS`` and what the OCI spec of the pause
container points at.

How a namespace is made: a *dedicated* thread (never a pool thread, which could
be reused for other work while still inside the new namespace) calls
``unshare(CLONE_NEWNET)``, which moves only that thread into a fresh namespace,
bind-mounts ``/proc/<pid>/task/<tid>/ns/net`` onto the file, moves itself back
and exits. Mount points are shared by every thread, so the bind mount is
visible to the whole daemon at once. On any failure the file is unlinked (and
unmounted if the mount happened), so nothing is left behind.

Removal is ``umount2(MNT_DETACH)`` + ``unlink``; it is idempotent: a file that
is gone (ENOENT) or no longer a mount point (EINVAL) is fine.

Everything here needs CAP_SYS_ADMIN and uses the libc calls directly through
ctypes: no ``ip`` binary, nothing from Python 3.12 (``os.unshare`` and
``os.setns`` only exist there).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import fcntl
import os
import secrets
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from arun.errdefs import FailedPreconditionError, InvalidArgumentError, NotFoundError

__all__ = [
    "DEFAULT_NETNS_DIR",
    "NetNS",
    "create",
    "is_netns",
    "remove",
    "run_in_netns",
    "set_loopback_up",
]

T = TypeVar("T")

#: arun keeps pod namespaces under its state directory (containerd's
#: ``netns_mounts_under_state_dir`` layout); containerd's default is /var/run/netns.
DEFAULT_NETNS_DIR = "/run/arun/netns"

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2
NS_GET_NSTYPE = 0xB703  # ioctl on a namespace fd (Linux 4.11+): returns its CLONE_NEW* type
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.unshare.argtypes = [ctypes.c_int]
        lib.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_void_p,
        ]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc = lib
    return _libc


def _check(rc: int, what: str, path: str | None = None) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def _unshare_net() -> None:
    _check(_lib().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")


def _setns(fd: int) -> None:
    _check(_lib().setns(fd, CLONE_NEWNET), "setns(CLONE_NEWNET)")


def _bind_mount(source: str, target: str) -> None:
    _check(_lib().mount(source.encode(), target.encode(), b"none", MS_BIND, None), "bind mount", target)


def _umount_detach(target: str) -> None:
    _check(_lib().umount2(target.encode(), MNT_DETACH), "umount", target)


def _thread_netns_path() -> str:
    # /proc/self/ns/net is the *main* thread's namespace; this thread's is under task/<tid>.
    return f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net"


def _run_dedicated(fn: Callable[[], T], name: str) -> T:
    """Run ``fn`` on a fresh OS thread that exits afterwards, and return its result.

    A fresh thread is what makes namespace switching safe: whatever happens to
    the thread's namespace, no other code ever runs on it.
    """
    box: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            failure.append(exc)

    t = threading.Thread(target=body, name=name, daemon=True)
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return box[0]


def _new_name() -> str:
    b = secrets.token_bytes(16)
    return f"cni-{b[0:4].hex()}-{b[4:6].hex()}-{b[6:8].hex()}-{b[8:10].hex()}-{b[10:].hex()}"


def _create_sync(base_dir: str, name: str | None) -> str:
    if name is not None and (not name or "/" in name or name in (".", "..")):
        raise InvalidArgumentError(f"invalid network namespace name {name!r}")
    os.makedirs(base_dir, mode=0o755, exist_ok=True)
    path = os.path.join(base_dir, name or _new_name())
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    except FileExistsError as exc:
        raise FailedPreconditionError(f"network namespace {path!r} already exists") from exc
    os.close(fd)

    def make() -> None:
        orig = os.open(_thread_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _unshare_net()
            try:
                _bind_mount(_thread_netns_path(), path)
            finally:
                # Go back, for tidiness only: the thread exits right after.
                _setns(orig)
        finally:
            os.close(orig)

    try:
        _run_dedicated(make, "arun-netns-create")
    except BaseException:
        _remove_sync(path)
        raise
    return path


def _remove_sync(path: str) -> None:
    try:
        _umount_detach(path)
    except OSError as exc:
        # EINVAL: not a mount point (never mounted or already unmounted); ENOENT: gone.
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_netns(path: str) -> bool:
    """True if ``path`` opens a network namespace (a live bind mount or /proc/<pid>/ns/net)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            return int(fcntl.ioctl(fd, NS_GET_NSTYPE)) == CLONE_NEWNET
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EINVAL):
                return False  # an ordinary file: the bind mount is gone
            raise
    finally:
        os.close(fd)


async def create(base_dir: str = DEFAULT_NETNS_DIR, name: str | None = None) -> NetNS:
    """Create a new persistent network namespace ``<base_dir>/<name>``.

    ``name`` defaults to containerd's form ``cni-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``.
    Raises FailedPreconditionError if the file already exists. Leaves nothing
    behind on failure, nor when the caller is cancelled half-way: the thread is
    waited for and what it made is removed.
    """
    work = asyncio.ensure_future(asyncio.to_thread(_create_sync, base_dir, name))
    try:
        path = await asyncio.shield(work)
    except asyncio.CancelledError:
        try:
            made = await work
        except Exception:
            raise asyncio.CancelledError() from None
        await asyncio.to_thread(_remove_sync, made)
        raise
    return NetNS(path)


async def remove(path: str) -> None:
    """Unmount and unlink a namespace file; idempotent."""
    await asyncio.to_thread(_remove_sync, path)


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a dedicated thread that has joined the network namespace at ``path``.

    Sockets created by ``fn`` stay in that namespace and can be used from any
    thread afterwards: this is how a port-forward dials ``localhost:<port>`` of
    a pod. Blocking; wrap in ``asyncio.to_thread`` from async code.
    """
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NotFoundError(f"network namespace {path!r} not found") from exc

    def body() -> T:
        try:
            _setns(target)
        except OSError as exc:
            raise FailedPreconditionError(f"cannot enter network namespace {path!r}: {exc.strerror}") from exc
        return fn()

    try:
        return _run_dedicated(body, "arun-netns-do")
    finally:
        os.close(target)


def _ifflags_up(name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", name.encode(), 0)
        res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req)
        flags = struct.unpack("16sH14x", res)[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), flags | IFF_UP))


def set_loopback_up(path: str) -> None:
    """Bring ``lo`` up inside the namespace at ``path`` (containerd's ``use_internal_loopback``)."""
    run_in_netns(path, lambda: _ifflags_up("lo"))


class NetNS:
    """A handle on a namespace file; cheap, holds no file descriptor."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"NetNS({self.path!r})"

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def closed(self) -> bool:
        """True once the namespace is gone (file missing, or no longer a namespace)."""
        return not is_netns(self.path)

    async def remove(self) -> None:
        await remove(self.path)

    def run(self, fn: Callable[[], T]) -> T:
        return run_in_netns(self.path, fn)
