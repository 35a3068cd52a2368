"""``RecordingMounter``: a ``Mounter`` that records calls instead of mounting."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from arun.core.mount import Mount

__all__ = ["MountCall", "RecordingMounter"]


@dataclass(frozen=True)
class MountCall:
    op: str  # "mount" or "unmount"
    target: str
    mount: Mount | None = None
    flags: int = 0


@dataclass
class RecordingMounter:
    """Records every call; ``fail`` maps a target to the errno its mount should fail with."""

    calls: list[MountCall] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)

    def mount(self, m: Mount, target: str) -> None:
        self.calls.append(MountCall("mount", target, m))
        if target in self.fail:
            code = self.fail[target]
            raise OSError(code, f"mount on {target!r}: {errno.errorcode.get(code, code)}")
        self.mounted.append(target)

    def unmount(self, target: str, flags: int = 0) -> None:
        self.calls.append(MountCall("unmount", target, None, flags))
        if target in self.mounted:
            # The most recent mount on the target goes first, as the kernel does.
            idx = len(self.mounted) - 1 - self.mounted[::-1].index(target)
            del self.mounted[idx]
