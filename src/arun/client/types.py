"""The client's public records: plain frozen dataclasses, no protobuf types.

Timestamps are timezone-aware ``datetime`` values in UTC, or ``None`` where the
daemon sent none.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "ContainerInfo",
    "Descriptor",
    "Event",
    "ExitStatus",
    "ImageInfo",
    "Mount",
    "Namespace",
    "ProcessInfo",
    "PullProgress",
    "RuncOptions",
    "SnapshotInfo",
    "TaskState",
    "TaskStatus",
    "Version",
]


@dataclass(frozen=True)
class Version:
    version: str
    revision: str


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, Any] | None = None

    def to_oci(self) -> dict[str, Any]:
        """The descriptor in OCI JSON form (``mediaType``, ``digest``, ``size``…)."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out

    @classmethod
    def from_oci(cls, doc: Mapping[str, Any]) -> Descriptor:
        """A descriptor from its OCI JSON form (``mediaType``, ``digest``, ``size``, ...)."""
        return cls(
            media_type=str(doc.get("mediaType", "")),
            digest=str(doc["digest"]),
            size=int(doc.get("size", 0)),
            annotations=dict(doc.get("annotations") or {}),
            platform=dict(doc["platform"]) if doc.get("platform") else None,
        )


@dataclass(frozen=True)
class ImageInfo:
    """An image record: a name pointing at a manifest or index."""

    name: str
    target: Descriptor
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class RuncOptions:
    """Options for the ``io.containerd.runc.v2`` runtime (containerd.runc.v1.Options)."""

    binary_name: str = ""
    root: str = ""
    systemd_cgroup: bool = False
    no_pivot_root: bool = False
    no_new_keyring: bool = False


@dataclass(frozen=True)
class ContainerInfo:
    """A container record (metadata only; the running part is a task)."""

    id: str
    image: str
    runtime: str
    spec: Mapping[str, Any]
    snapshotter: str = ""
    snapshot_key: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    runtime_options: RuncOptions | None = None


@dataclass(frozen=True)
class Mount:
    """A mount as snapshotters hand them out (``type``, ``source``, ``options``)."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    parent: str
    kind: str  # "view", "active" or "committed"
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class TaskStatus(enum.StrEnum):
    UNKNOWN = "unknown"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    PAUSING = "pausing"


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: ``code`` (128+signal after a kill) and when."""

    code: int
    exited_at: datetime | None = None

    @property
    def ok(self) -> bool:
        """Whether the process exited with code 0."""
        return self.code == 0


@dataclass(frozen=True)
class TaskState:
    id: str
    pid: int
    status: TaskStatus
    exec_id: str = ""
    terminal: bool = False
    exit_status: int = 0
    exited_at: datetime | None = None


@dataclass(frozen=True)
class ProcessInfo:
    pid: int


@dataclass(frozen=True)
class Event:
    """One event from the daemon's exchange.

    ``type`` is the protobuf type of the payload (``containerd.events.TaskExit``)
    and ``data`` its fields (snake_case keys, as in the proto), so events the
    client has no class for still arrive whole.
    """

    timestamp: datetime | None
    namespace: str
    topic: str
    type: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class PullProgress:
    """A progress report during a pull or import: one item (``name``) and its state."""

    name: str
    status: str  # waiting, downloading, done, exists, unpacking, unpacked, ...
    offset: int = 0
    total: int = 0
