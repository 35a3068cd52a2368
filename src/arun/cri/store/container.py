"""Containers as the CRI plugin keeps them: metadata (fixed at creation) and status (changing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arun.api.cri.runtime.v1 import api_pb2
from arun.core.runtime import Task
from arun.cri.store.generic import ObjectStore

if TYPE_CHECKING:
    from arun.cri.io.container_io import ContainerIO

STATUS_VERSION = "v1"


@dataclass
class ContainerMetadata:
    """Persisted as the ``io.cri-containerd.container.metadata`` extension of the container record."""

    id: str
    name: str
    sandbox_id: str
    config: api_pb2.ContainerConfig
    # The image id (``sha256:<config digest>``) and the name the container was created from.
    image_ref: str = ""
    image_name: str = ""
    # Absolute path of the CRI log, "" for none.
    log_path: str = ""
    stop_signal: str = ""
    runtime_handler: str = ""
    # Mounts as the status reports them (the CRI mounts after resolution), serialised protos.
    mounts: list[api_pb2.Mount] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "Version": "v1",
                "ID": self.id,
                "Name": self.name,
                "SandboxID": self.sandbox_id,
                "Config": self.config.SerializeToString().hex(),
                "ImageRef": self.image_ref,
                "ImageName": self.image_name,
                "LogPath": self.log_path,
                "StopSignal": self.stop_signal,
                "RuntimeHandler": self.runtime_handler,
                "Mounts": [m.SerializeToString().hex() for m in self.mounts],
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ContainerMetadata:
        doc = json.loads(data)
        config = api_pb2.ContainerConfig()
        config.ParseFromString(bytes.fromhex(doc["Config"]))
        mounts = []
        for hexed in doc.get("Mounts") or []:
            m = api_pb2.Mount()
            m.ParseFromString(bytes.fromhex(hexed))
            mounts.append(m)
        return cls(
            id=doc["ID"],
            name=doc["Name"],
            sandbox_id=doc["SandboxID"],
            config=config,
            image_ref=doc.get("ImageRef", ""),
            image_name=doc.get("ImageName", ""),
            log_path=doc.get("LogPath", ""),
            stop_signal=doc.get("StopSignal", ""),
            runtime_handler=doc.get("RuntimeHandler", ""),
            mounts=mounts,
        )


@dataclass
class ContainerStatus:
    pid: int = 0
    created_at: int = 0  # ns
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    # Transient flags, never persisted.
    starting: bool = False
    removing: bool = False
    unknown: bool = False
    # Resources after UpdateContainerResources (serialised LinuxContainerResources), b"" for none.
    resources: bytes = b""

    def state(self) -> api_pb2.ContainerState:
        if self.unknown:
            return api_pb2.CONTAINER_UNKNOWN
        if self.finished_at:
            return api_pb2.CONTAINER_EXITED
        if self.started_at:
            return api_pb2.CONTAINER_RUNNING
        if self.created_at:
            return api_pb2.CONTAINER_CREATED
        return api_pb2.CONTAINER_UNKNOWN

    def encode(self) -> bytes:
        return json.dumps(
            {
                "Version": STATUS_VERSION,
                "Pid": self.pid,
                "CreatedAt": self.created_at,
                "StartedAt": self.started_at,
                "FinishedAt": self.finished_at,
                "ExitCode": self.exit_code,
                "Reason": self.reason,
                "Message": self.message,
                "Resources": self.resources.hex(),
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ContainerStatus:
        doc = json.loads(data)
        if doc.get("Version") != STATUS_VERSION:
            raise ValueError(f"unsupported container status version {doc.get('Version')!r}")
        return cls(
            pid=int(doc.get("Pid", 0)),
            created_at=int(doc.get("CreatedAt", 0)),
            started_at=int(doc.get("StartedAt", 0)),
            finished_at=int(doc.get("FinishedAt", 0)),
            exit_code=int(doc.get("ExitCode", 0)),
            reason=doc.get("Reason", ""),
            message=doc.get("Message", ""),
            resources=bytes.fromhex(doc.get("Resources", "")),
        )


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StatusFile:
    """The container status, checkpointed to ``<dir>/status`` on every change (atomic replace)."""

    def __init__(self, directory: Path, status: ContainerStatus) -> None:
        self.path = directory / "status"
        self._status = status

    def get(self) -> ContainerStatus:
        return replace(self._status)

    @property
    def current(self) -> ContainerStatus:
        """The status itself, not a copy: for readers that only look (the list path). Never modify it;
        ``update`` replaces the object rather than changing it, so a reference stays consistent."""
        return self._status

    def update(self, **changes: Any) -> ContainerStatus:
        """Apply ``changes``; persisted fields are written to disk (synchronously: the file is tiny)."""
        new = replace(self._status, **changes)
        transient = {"starting", "removing", "unknown"}
        if set(changes) - transient:
            _atomic_write(self.path, new.encode())
        self._status = new
        return replace(new)

    @classmethod
    def create(cls, directory: Path, status: ContainerStatus) -> StatusFile:
        directory.mkdir(parents=True, exist_ok=True)
        sf = cls(directory, status)
        _atomic_write(sf.path, status.encode())
        return sf

    @classmethod
    def load(cls, directory: Path) -> StatusFile:
        return cls(directory, ContainerStatus.decode((directory / "status").read_bytes()))


class Container:
    def __init__(self, metadata: ContainerMetadata, status: StatusFile) -> None:
        self.metadata = metadata
        self.status = status
        self.task: Task | None = None
        self.io: ContainerIO | None = None
        # Set once the container's process has exited and the exit was recorded.
        self.stopped = asyncio.Event()
        self.lock = asyncio.Lock()
        # The OCI spec it was created with (for the verbose status).
        self.spec: dict[str, Any] | None = None
        # Set by the OOM event of its task.
        self.oom_killed = False
        # Its snapshot's mounts, known since CreateContainer (None after a restart: asked again).
        self.rootfs: list[Any] | None = None
        # The ListContainers entry, built once per (state, created_at) it was listed in; shared by
        # every reply, so never modified after it is built (see container_list.container_proto).
        self.list_entry: tuple[tuple[int, int], api_pb2.Container] | None = None

    @property
    def id(self) -> str:
        return self.metadata.id

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def sandbox_id(self) -> str:
        return self.metadata.sandbox_id

    @property
    def config(self) -> api_pb2.ContainerConfig:
        return self.metadata.config


class ContainerStore(ObjectStore[Container]):
    kind = "container"

    def by_sandbox(self, sandbox_id: str) -> list[Container]:
        return [c for c in self.list() if c.sandbox_id == sandbox_id]
