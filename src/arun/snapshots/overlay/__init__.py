"""The overlayfs snapshotter (containerd's ``overlayfs``).

Layout under the root: ``metadata.db`` and ``snapshots/<id>/{fs,work}``; a
snapshot's own changes live in ``fs``. Mount specs, as containerd returns them:

* no parent: a bind of ``fs`` (``rw`` for active, ``ro`` for a view);
* active with parents: ``overlay`` with ``upperdir=<fs>``, ``workdir=<work>``
  and ``lowerdir=`` the parents' ``fs`` dirs, nearest first;
* view of a single parent: a read-only bind of the parent's ``fs``;
* view of two or more parents: ``overlay`` with only ``lowerdir=``.

``index=off`` is added when the kernel has the overlay ``index`` parameter,
so a lower layer can appear in more than one mount.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence

from arun.core.mount import Mount
from arun.core.snapshots import Info, Kind
from arun.fsutil import supports_d_type
from arun.mount import LinuxMounter, MountError
from arun.plugin.registry import SkipPlugin
from arun.snapshots.base import LocalSnapshotter
from arun.snapshots.storage import Snapshot, Transaction

__all__ = ["UPPERDIR_LABEL", "OverlaySnapshotter", "check_supported"]

# Label containerd adds (when configured) so that a client can find an active snapshot's upper dir.
UPPERDIR_LABEL = "containerd.io/snapshot/overlay.upperdir"


def check_supported(root: str) -> None:
    """Raise SkipPlugin unless overlayfs with several lower dirs can be mounted on ``root``'s fs.

    Like containerd's ``overlayutils.Supported``: checks d_type, then mounts
    and unmounts a two-lower overlay in a scratch directory under ``root``.
    """
    os.makedirs(root, 0o700, exist_ok=True)
    if not supports_d_type(root):
        raise SkipPlugin(
            f"{root} does not support d_type; if the backing filesystem is xfs, reformat it with ftype=1"
        )
    if os.geteuid() != 0:
        raise SkipPlugin("overlayfs snapshotter needs root")
    td = tempfile.mkdtemp(prefix="overlay-check-", dir=root)
    try:
        for d in ("lower1", "lower2", "upper", "work", "merged"):
            os.mkdir(os.path.join(td, d), 0o755)
        opts = (
            f"lowerdir={td}/lower2:{td}/lower1",
            f"upperdir={td}/upper",
            f"workdir={td}/work",
        )
        mounter = LinuxMounter()
        merged = os.path.join(td, "merged")
        try:
            mounter.mount(Mount("overlay", "overlay", opts), merged)
        except MountError as e:
            raise SkipPlugin(f"overlayfs is not supported on {root}: {e}") from e
        mounter.unmount(merged)
    finally:
        shutil.rmtree(td, ignore_errors=True)


def _supports_index() -> bool:
    return os.path.exists("/sys/module/overlay/parameters/index")


class OverlaySnapshotter(LocalSnapshotter):
    """``Snapshotter`` on overlayfs. Build it with ``await OverlaySnapshotter.create(root)``."""

    def __init__(
        self, root: str | os.PathLike[str], *, async_remove: bool = False, upperdir_label: bool = False
    ) -> None:
        super().__init__(root, async_remove=async_remove)
        self.upperdir_label = upperdir_label
        self.index_off = _supports_index()

    @classmethod
    async def create(
        cls,
        root: str | os.PathLike[str],
        *,
        async_remove: bool = False,
        upperdir_label: bool = False,
        check: bool = True,
    ) -> OverlaySnapshotter:
        """Open (creating if needed) the snapshotter; with ``check``, SkipPlugin if overlay is unusable."""
        self = cls(root, async_remove=async_remove, upperdir_label=upperdir_label)
        if check:
            await asyncio.to_thread(check_supported, self.root)
        await self._init()
        return self

    def upper_path(self, sid: str) -> str:
        return os.path.join(self.snapshots_dir, sid, "fs")

    def work_path(self, sid: str) -> str:
        return os.path.join(self.snapshots_dir, sid, "work")

    def _usage_dir(self, sid: str) -> str:
        return self.upper_path(sid)

    def _mounts(self, s: Snapshot) -> list[Mount]:
        if not s.parent_ids:
            flag = "ro" if s.kind == Kind.VIEW else "rw"
            return [Mount("bind", self.upper_path(s.id), (flag, "rbind"))]
        options: list[str] = []
        if self.index_off:
            options.append("index=off")
        if s.kind == Kind.ACTIVE:
            options += [f"workdir={self.work_path(s.id)}", f"upperdir={self.upper_path(s.id)}"]
        elif len(s.parent_ids) == 1:
            return [Mount("bind", self.upper_path(s.parent_ids[0]), ("ro", "rbind"))]
        options.append("lowerdir=" + ":".join(self.upper_path(p) for p in s.parent_ids))
        return [Mount("overlay", "overlay", tuple(options))]

    async def _label(self, info: Info) -> Info:
        if self.upperdir_label:
            sid, _, _ = await self._ms.view(lambda tx: tx.get_info(info.name))
            info.labels = {**info.labels, UPPERDIR_LABEL: self.upper_path(sid)}
        return info

    async def stat(self, key: str) -> Info:
        return await self._label(await super().stat(key))

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        return await self._label(await super().update(info, fieldpaths))

    async def walk(self) -> AsyncIterator[Info]:
        ids = (
            await self._ms.view(lambda tx: {v: k for k, v in tx.id_map().items()})
            if self.upperdir_label
            else {}
        )
        async for info in super().walk():
            if self.upperdir_label:
                info.labels = {**info.labels, UPPERDIR_LABEL: self.upper_path(ids[info.name])}
            yield info

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(Kind.ACTIVE, key, parent, labels)

    async def view(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        return await self._create(Kind.VIEW, key, parent, labels)

    async def _create(
        self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None
    ) -> list[Mount]:
        def step(tx: Transaction) -> Snapshot:
            td = self._new_dir()
            try:
                os.mkdir(os.path.join(td, "fs"), 0o755)
                if kind == Kind.ACTIVE:
                    os.mkdir(os.path.join(td, "work"), 0o711)
                s = tx.create_snapshot(kind, key, parent, labels)
                if s.parent_ids:
                    # The new upper dir takes the owner of the parent's root, as containerd does.
                    st = os.stat(self.upper_path(s.parent_ids[0]))
                    os.lchown(os.path.join(td, "fs"), st.st_uid, st.st_gid)
                os.rename(td, self._snapshot_dir(s.id))
            except BaseException:
                shutil.rmtree(td, ignore_errors=True)
                raise
            return s

        s = await self._ms.update(step)
        return self._mounts(s)
