"""Pod sandboxes as the CRI plugin keeps them."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from arun.api.cri.runtime.v1 import api_pb2
from arun.core.runtime import Task
from arun.cri.store.generic import ObjectStore


class SandboxState(IntEnum):
    # Being created: not visible to List/Status until RunPodSandbox returns.
    INIT = -1
    READY = api_pb2.SANDBOX_READY
    NOTREADY = api_pb2.SANDBOX_NOTREADY
    UNKNOWN = 2


@dataclass
class SandboxMetadata:
    """What is persisted (as a container record extension) and recovered after a restart."""

    id: str
    name: str
    config: api_pb2.PodSandboxConfig
    runtime_handler: str = ""
    runtime_type: str = ""
    netns_path: str = ""
    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)
    # go-cni's marshalled result (arun.cni.PodNetworkResult.to_json), for the verbose status.
    cni_result: dict[str, Any] | None = None
    created_at: int = 0  # ns
    # The pause image id, for the verbose info.
    image: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "Version": "v1",
                "ID": self.id,
                "Name": self.name,
                "Config": self.config.SerializeToString().hex(),
                "RuntimeHandler": self.runtime_handler,
                "RuntimeType": self.runtime_type,
                "NetNSPath": self.netns_path,
                "IP": self.ip,
                "AdditionalIPs": self.additional_ips,
                "CNIResult": self.cni_result,
                "CreatedAt": self.created_at,
                "Image": self.image,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SandboxMetadata:
        doc = json.loads(data)
        config = api_pb2.PodSandboxConfig()
        config.ParseFromString(bytes.fromhex(doc["Config"]))
        return cls(
            id=doc["ID"],
            name=doc["Name"],
            config=config,
            runtime_handler=doc.get("RuntimeHandler", ""),
            runtime_type=doc.get("RuntimeType", ""),
            netns_path=doc.get("NetNSPath", ""),
            ip=doc.get("IP", ""),
            additional_ips=list(doc.get("AdditionalIPs") or []),
            cni_result=doc.get("CNIResult"),
            created_at=int(doc.get("CreatedAt", 0)),
            image=doc.get("Image", ""),
        )


class Sandbox:
    def __init__(self, metadata: SandboxMetadata) -> None:
        self.metadata = metadata
        self.state = SandboxState.INIT
        self.pid = 0
        self.exited_at = 0  # ns
        self.exit_status = 0
        self.task: Task | None = None
        # Set once the pause container has exited (or never ran).
        self.stopped = asyncio.Event()
        # Serialises stop/remove and the exit handler.
        self.lock = asyncio.Lock()
        self.removing = False
        # Paths of the files bind-mounted into the pod's containers.
        self.root_dir = ""
        self.state_dir = ""
        self.shm_path = ""
        self.spec: dict[str, Any] | None = None
        self.updated_at = time.time_ns()
        # The ListPodSandbox entry, built once per state it was listed in; shared by every reply,
        # so never modified after it is built (see sandbox_list.sandbox_proto).
        self.list_entry: tuple[tuple[int, int], api_pb2.PodSandbox] | None = None

    @property
    def id(self) -> str:
        return self.metadata.id

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def config(self) -> api_pb2.PodSandboxConfig:
        return self.metadata.config

    def mark_exited(self, status: int, exited_at: int) -> None:
        self.state = SandboxState.NOTREADY
        self.exit_status = status
        self.exited_at = exited_at or time.time_ns()
        self.pid = 0
        self.stopped.set()


class SandboxStore(ObjectStore[Sandbox]):
    kind = "sandbox"
