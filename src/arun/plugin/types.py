"""Plugin type strings, byte-identical to containerd's (they appear in config
sections and in `ctr plugins ls`)."""

from __future__ import annotations

from enum import StrEnum


class PluginType(StrEnum):
    INTERNAL = "io.containerd.internal.v1"
    RUNTIME = "io.containerd.runtime.v1"
    RUNTIME_V2 = "io.containerd.runtime.v2"
    SHIM = "io.containerd.shim.v1"
    SERVICE = "io.containerd.service.v1"
    GRPC = "io.containerd.grpc.v1"
    TTRPC = "io.containerd.ttrpc.v1"
    SNAPSHOT = "io.containerd.snapshotter.v1"
    TASK_MONITOR = "io.containerd.monitor.v1"
    DIFF = "io.containerd.differ.v1"
    METADATA = "io.containerd.metadata.v1"
    CONTENT = "io.containerd.content.v1"
    GC = "io.containerd.gc.v1"
    EVENT = "io.containerd.event.v1"
    LEASE = "io.containerd.lease.v1"
    STREAMING = "io.containerd.streaming.v1"
    TRANSFER = "io.containerd.transfer.v1"
    SANDBOX_STORE = "io.containerd.sandbox.store.v1"
    SANDBOX_CONTROLLER = "io.containerd.sandbox.controller.v1"
    IMAGE_VERIFIER = "io.containerd.image-verifier.v1"
    WARNING = "io.containerd.warning.v1"
    CRI = "io.containerd.cri.v1"
    PODSANDBOX = "io.containerd.podsandbox.controller.v1"
