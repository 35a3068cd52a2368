"""The snapshots service: the namespaced snapshotters by name."""

from __future__ import annotations

from collections.abc import Mapping

from arun.errdefs import InvalidArgumentError, NotFoundError
from arun.metadata.snapshots import NamespacedSnapshotter

DEFAULT = "overlayfs"


class SnapshotsLocal:
    def __init__(self, snapshotters: Mapping[str, NamespacedSnapshotter], default: str = DEFAULT) -> None:
        self.snapshotters = dict(snapshotters)
        self.default = default

    def get(self, name: str) -> NamespacedSnapshotter:
        """The snapshotter ``name`` (containerd requires a name on every request)."""
        if not name:
            raise InvalidArgumentError("snapshotter argument missing")
        sn = self.snapshotters.get(name)
        if sn is None:
            raise InvalidArgumentError(f"snapshotter not loaded: {name}")
        return sn

    def names(self) -> list[str]:
        return sorted(self.snapshotters)

    def lookup(self, name: str) -> NamespacedSnapshotter:
        """Like ``get`` but NotFound for an unknown name (for in-process callers)."""
        sn = self.snapshotters.get(name or self.default)
        if sn is None:
            raise NotFoundError(f"snapshotter not loaded: {name or self.default}")
        return sn
