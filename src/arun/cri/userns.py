"""Pods in their own user namespace (``NamespaceMode POD``): a pinned user namespace, a network
namespace owned by it, and id-mapped root filesystems.

*Namespaces.* Before the pause container exists, a helper process (util-linux ``unshare``) makes
a user namespace — and, unless the pod uses the host network, a network namespace *owned by
it* — in one ``unshare(2)``. Its id maps are written from the daemon, then both namespaces are
bind-mounted onto files: the user namespace at ``<sandbox state>/pinned-namespaces/user``, the
network namespace where the CNI code expects pod namespaces. The helper is killed; the mounts
keep the namespaces. The pause container and every container of the pod join both by path.
The network namespace has to belong to the pod's user namespace: a process in a user namespace
may mount ``sysfs`` only for a network namespace its user namespace owns.

*Root filesystems.* Layers stay owned by the image's ids on disk. Just before a task is
created, the directory holding the snapshot's layer directories is bind-mounted, id-mapped
with the pod's user namespace (``open_tree`` + ``mount_setattr(MOUNT_ATTR_IDMAP)`` +
``move_mount``), under a private work directory, and the overlay (or bind) mount handed to the
shim names the layer directories through that view: a file owned by 0 on disk belongs to the
pod's root inside, and what the pod writes lands in the upper directory with the on-disk ids.
Once the shim has mounted the root filesystem, the view is detached: the overlay holds its own
references to its layers, so no id-mapped mount outlives task creation.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

from arun.core.mount import Mount
from arun.errdefs import FailedPreconditionError
from arun.mount import LinuxMounter, is_mountpoint

# x86_64 and aarch64 share these numbers (the unified syscall table of new calls).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x00000004
MOUNT_ATTR_IDMAP = 0x00100000
MNT_DETACH = 2

#: Where the pinned user namespace of a pod lives, relative to its state directory.
PINNED_USERNS = os.path.join("pinned-namespaces", "user")

# One uid_map/gid_map line per mapping; the kernel takes at most 340 (CRI validation allows one).
Mapping = dict[str, int]


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


_libc: Any = None


def _syscall(*args: Any) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    rc = int(_libc.syscall(*args))
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return rc


def _maps_text(maps: Sequence[Mapping]) -> str:
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)


def _new_netns_name() -> str:
    b = secrets.token_bytes(16)
    return f"cni-{b[0:4].hex()}-{b[4:6].hex()}-{b[6:8].hex()}-{b[8:10].hex()}-{b[10:].hex()}"


def _unmount_and_unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        while is_mountpoint(path):
            LinuxMounter().unmount(path, MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def create_namespaces(
    userns_path: str,
    uid_maps: Sequence[Mapping],
    gid_maps: Sequence[Mapping],
    netns_dir: str | None = None,
) -> str:
    """Make a user namespace with these maps, pinned at ``userns_path`` (a new file), and, if
    ``netns_dir`` is given, a network namespace owned by it, pinned in ``netns_dir``; returns
    the network namespace's path ("" without ``netns_dir``). Blocking; leaves nothing behind
    on failure."""
    os.makedirs(os.path.dirname(userns_path), mode=0o711, exist_ok=True)
    pins = [userns_path]
    if netns_dir is not None:
        os.makedirs(netns_dir, mode=0o755, exist_ok=True)
        pins.append(os.path.join(netns_dir, _new_netns_name()))
    made: list[str] = []
    child: subprocess.Popen[bytes] | None = None
    try:
        for p in pins:
            os.close(os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
            made.append(p)
        argv = ["unshare", "--user"] + (["--net"] if netns_dir is not None else [])
        # The helper says it is in its namespaces (unshare(1) execs sh only after unshare(2)),
        # then waits on its stdin until it is killed.
        child = subprocess.Popen(
            [*argv, "--", "sh", "-c", "echo ready; read _"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
        assert child.stdout is not None and child.stderr is not None
        if child.stdout.readline().strip() != b"ready":
            child.wait()
            err = child.stderr.read().decode(errors="replace").strip()
            why = err or "unshare failed"
            raise FailedPreconditionError(f"cannot create the pod's user namespace: {why}")
        with open(f"/proc/{child.pid}/uid_map", "w") as f:
            f.write(_maps_text(uid_maps))
        with open(f"/proc/{child.pid}/gid_map", "w") as f:
            f.write(_maps_text(gid_maps))
        m = LinuxMounter()
        m.mount(Mount(type="bind", source=f"/proc/{child.pid}/ns/user", options=("bind",)), userns_path)
        if netns_dir is not None:
            m.mount(Mount(type="bind", source=f"/proc/{child.pid}/ns/net", options=("bind",)), pins[1])
    except BaseException:
        for p in reversed(made):
            _unmount_and_unlink(p)
        raise
    finally:
        if child is not None:
            with contextlib.suppress(OSError):
                child.send_signal(signal.SIGKILL)
            child.wait()
            for s in (child.stdin, child.stdout, child.stderr):
                if s is not None:
                    s.close()
    return pins[1] if netns_dir is not None else ""


def unpin(path: str) -> None:
    """Unmount and remove a pinned namespace file (idempotent)."""
    _unmount_and_unlink(path)


def idmapped_bind(source: str, target: str, userns_path: str) -> None:
    """Mount ``source`` at ``target`` (a new directory) seen through the id maps of the user
    namespace pinned at ``userns_path``."""
    os.mkdir(target, mode=0o700)
    try:
        userns_fd = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            tree = _syscall(SYS_OPEN_TREE, AT_FDCWD, source.encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
            try:
                attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
                _syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))
                _syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH)
            finally:
                os.close(tree)
        finally:
            os.close(userns_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(target)
        raise


def _layer_dirs(m: Mount) -> list[str]:
    if m.type == "overlay":
        dirs: list[str] = []
        for o in m.options:
            key, sep, value = o.partition("=")
            if sep and key == "lowerdir":
                dirs.extend(p for p in value.split(":") if p)
        return dirs
    if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
        return [m.source]
    raise FailedPreconditionError(f"cannot id-map a root filesystem mounted as {m.type!r}")


def map_rootfs(
    mounts: Sequence[Mount], workdir: str, userns_path: str, root_uid: int, root_gid: int
) -> list[Mount]:
    """The snapshot's mounts with every read-only layer (an overlay's lower directories, a bind
    mount's source) named through one id-mapped view of the directory that holds them all,
    mounted at ``workdir/layers``. An overlay's upper and work directories cannot go through
    the view (overlayfs works in them with the mounter's ids, which the pod's maps do not
    hold): they stay as they are and the upper directory is given to the pod's root
    (``root_uid``:``root_gid`` on the host), so what the pod writes is stored with its host ids.
    Undo with :func:`unmap_rootfs` (as soon as the mounts are mounted). Blocking."""
    for m in mounts:
        if m.type == "overlay":
            for o in m.options:
                key, sep, value = o.partition("=")
                if sep and key == "upperdir" and value:
                    os.lchown(value, root_uid, root_gid)
    dirs = [os.path.normpath(d) for m in mounts for d in _layer_dirs(m)]
    if not dirs:
        raise FailedPreconditionError("the root filesystem has no layer to id-map")
    # For an overlay snapshot of several layers, the snapshots dir (each layer is
    # snapshots/<n>/fs); for one layer, that layer.
    common = os.path.commonpath(dirs)
    if common in ("", "/"):
        raise FailedPreconditionError(f"cannot id-map layers without a common parent: {dirs}")
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    view = os.path.join(workdir, "layers")
    try:
        idmapped_bind(common, view, userns_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(workdir)
        raise

    def through(p: str) -> str:
        return os.path.normpath(os.path.join(view, os.path.relpath(os.path.normpath(p), common)))

    out = []
    for m in mounts:
        if m.type == "overlay":
            opts = []
            for o in m.options:
                key, sep, value = o.partition("=")
                if sep and key == "lowerdir":
                    opts.append(f"{key}=" + ":".join(through(p) for p in value.split(":") if p))
                else:
                    opts.append(o)
            out.append(Mount(type=m.type, source=m.source, target=m.target, options=tuple(opts)))
        else:
            out.append(Mount(type=m.type, source=through(m.source), target=m.target, options=m.options))
    return out


def unmap_rootfs(workdir: str) -> None:
    """Detach the id-mapped view under ``workdir`` and remove it (idempotent). Mounts made
    through the view keep working."""
    view = os.path.join(workdir, "layers")
    with contextlib.suppress(OSError):
        while is_mountpoint(view):
            LinuxMounter().unmount(view, MNT_DETACH)
    for d in (view, workdir):
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(d)


def probe(directory: str) -> str:
    """Why pods cannot have their own user namespace on this host ("" if they can): a user
    namespace is made and pinned, and used to id-map a directory of ``directory``'s
    filesystem, and an overlay mounted over that view must show a layer's root-owned file as
    owned by the mapped root."""
    if not os.path.exists("/proc/self/ns/user"):
        return "the kernel has no user namespaces"
    if shutil.which("unshare") is None:
        return "util-linux unshare(1) is not installed"
    os.makedirs(directory, mode=0o711, exist_ok=True)
    base = os.path.join(directory, f".userns-probe-{os.getpid()}-{secrets.token_hex(4)}")
    ns = base + "-ns"
    work = base + "-work"
    tree = base + "-tree"
    merged = base + "-merged"
    try:
        for d in (tree, tree + "/lower", tree + "/upper", tree + "/work", merged):
            os.mkdir(d, 0o755)
        flags = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
        os.close(os.open(os.path.join(tree, "lower", "probe"), flags, 0o644))
        maps = [{"containerID": 0, "hostID": 65536, "size": 65536}]
        create_namespaces(ns, maps, maps)
        try:
            ov = map_rootfs(
                [
                    Mount(
                        type="overlay",
                        source="overlay",
                        options=(
                            f"lowerdir={tree}/lower",
                            f"upperdir={tree}/upper",
                            f"workdir={tree}/work",
                        ),
                    )
                ],
                work,
                ns,
                65536,
                65536,
            )
            try:
                LinuxMounter().mount(ov[0], merged)
            finally:
                unmap_rootfs(work)
            try:
                if os.statvfs(merged).f_flag & os.ST_RDONLY:
                    return "an overlay over id-mapped layers mounts read-only"
                st = os.stat(os.path.join(merged, "probe"))
                if st.st_uid != 65536:
                    return f"a layer's uid 0 shows as {st.st_uid} through an id-mapped overlay, not 65536"
            finally:
                while is_mountpoint(merged):
                    LinuxMounter().unmount(merged, MNT_DETACH)
        finally:
            unpin(ns)
        return ""
    except (OSError, FailedPreconditionError) as e:
        return f"id-mapped overlay layers do not work in {directory}: {e}"
    finally:
        shutil.rmtree(tree, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(merged)
