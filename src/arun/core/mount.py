"""Mount specs and the logic of applying a list of them.

A ``Mount`` is what snapshotters return and what crosses the API
(containerd's ``types.Mount``): the client mounts it. ``Mounter`` is the
small privileged interface that does the syscalls; ``arun.mount`` has the
Linux implementation and ``arun.testing.mount`` a recording fake.

``mount_all``/``unmount_all`` contain only ordering logic (no I/O of their
own) and are blocking: call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from arun.errdefs import InvalidArgumentError

__all__ = [
    "MNT_DETACH",
    "Mount",
    "Mounter",
    "mount_all",
    "option_value",
    "overlay_dirs",
    "read_only",
    "unmount_all",
]

# umount2 flag: lazy unmount.
MNT_DETACH = 2


@dataclass(frozen=True)
class Mount:
    """One mount: ``type`` (``bind``, ``overlay`` …), ``source``, mount(8)-style ``options``.

    ``target`` is a path *inside* the directory the mounts are applied to
    (empty: the directory itself), as containerd 2's ``Mount.Target``.
    """

    type: str
    source: str
    options: tuple[str, ...] = ()
    target: str = ""

    def is_read_only(self) -> bool:
        return "ro" in self.options


@runtime_checkable
class Mounter(Protocol):
    """The syscalls. Both calls block."""

    def mount(self, m: Mount, target: str) -> None:
        """Mount ``m`` on the directory ``target`` (its ``target`` field is already resolved)."""
        ...

    def unmount(self, target: str, flags: int = 0) -> None:
        """Unmount ``target``; a path that is not a mount point is not an error."""
        ...


def _resolve_target(root: str, sub: str) -> str:
    if not sub:
        return root
    parts = [p for p in sub.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgumentError(f"mount target {sub!r} escapes {root!r}")
    return os.path.join(root, *parts) if parts else root


def mount_all(mounter: Mounter, mounts: Sequence[Mount], target: str) -> None:
    """Mount ``mounts`` in order onto ``target``; on failure unmount what was mounted and re-raise."""
    done: list[str] = []
    try:
        for m in mounts:
            where = _resolve_target(target, m.target)
            mounter.mount(m, where)
            done.append(where)
    except BaseException:
        for where in reversed(done):
            try:
                mounter.unmount(where, MNT_DETACH)
            except OSError as e:  # keep the original error
                e.add_note(f"while unmounting {where!r} after a failed mount")
        raise


def unmount_all(mounter: Mounter, mounts: Sequence[Mount], target: str, flags: int = 0) -> None:
    """Unmount what ``mount_all(mounts, target)`` mounted, in reverse order."""
    for m in reversed(mounts):
        mounter.unmount(_resolve_target(target, m.target), flags)


def read_only(mounts: Sequence[Mount]) -> list[Mount]:
    """The same mounts made read-only (containerd's ``readonly`` for temp mounts).

    A bind gets ``ro``; an overlay loses its upper and work dirs, keeping the
    upper as the top-most lower so the view is identical.
    """
    out: list[Mount] = []
    for m in mounts:
        if m.type == "overlay":
            upper, lowers = overlay_dirs(m)
            opts = [o for o in m.options if not o.startswith(("upperdir=", "workdir=", "lowerdir="))]
            chain = ([upper] if upper else []) + lowers
            if len(chain) == 1:
                out.append(Mount("bind", chain[0], ("ro", "rbind"), m.target))
                continue
            opts.append("lowerdir=" + ":".join(chain))
            out.append(Mount(m.type, m.source, tuple(opts), m.target))
        else:
            opts = [o for o in m.options if o not in ("rw", "ro")]
            out.append(Mount(m.type, m.source, (*opts, "ro"), m.target))
    return out


def option_value(m: Mount, key: str) -> str | None:
    """The value of ``key=`` in ``m.options`` (the last one wins), or None."""
    prefix = key + "="
    val: str | None = None
    for o in m.options:
        if o.startswith(prefix):
            val = o[len(prefix) :]
    return val


def overlay_dirs(m: Mount) -> tuple[str, list[str]]:
    """``(upperdir, lowerdirs)`` of an overlay mount; upperdir is ``""`` for a read-only overlay."""
    if m.type != "overlay":
        raise InvalidArgumentError(f"mount of type {m.type!r} is not an overlay")
    lower = option_value(m, "lowerdir")
    lowers = [d for d in lower.split(":") if d] if lower else []
    return option_value(m, "upperdir") or "", lowers
