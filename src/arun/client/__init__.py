"""arun's Python client: containerd's concepts (images, containers, tasks, events) from async code.

``Client`` talks to a daemon — arun or containerd — over its socket;
``arun.Runtime`` (``arun.embedded``) gives the same API over an arun booted in
the caller's event loop. The public surface is plain dataclasses and errdefs
errors; no protobuf types leak out. (``arun.client.transport.Transport``, the
message-level interface a client runs over, is the one place that speaks protobuf:
an extension point, not part of this surface.)
"""

from arun.client.cio import IOSet
from arun.client.client import Client
from arun.client.containers import Container, Containers
from arun.client.content import Content, ContentInfo
from arun.client.images import ImageManifest, Images, Platform, chain_id, default_platform
from arun.client.pull import normalize_reference
from arun.client.snapshots import Snapshots
from arun.client.tasks import Process, Task, parse_signal
from arun.client.transport import DEFAULT_ADDRESS, Endpoint, parse_endpoint
from arun.client.types import (
    ContainerInfo,
    Descriptor,
    Event,
    ExitStatus,
    ImageInfo,
    Mount,
    Namespace,
    ProcessInfo,
    PullProgress,
    RuncOptions,
    SnapshotInfo,
    TaskState,
    TaskStatus,
    Version,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "Client",
    "Container",
    "ContainerInfo",
    "Containers",
    "Content",
    "ContentInfo",
    "Descriptor",
    "Endpoint",
    "Event",
    "ExitStatus",
    "IOSet",
    "ImageInfo",
    "ImageManifest",
    "Images",
    "Mount",
    "Namespace",
    "Platform",
    "Process",
    "ProcessInfo",
    "PullProgress",
    "RuncOptions",
    "SnapshotInfo",
    "Snapshots",
    "Task",
    "TaskState",
    "TaskStatus",
    "Version",
    "chain_id",
    "default_platform",
    "normalize_reference",
    "parse_endpoint",
    "parse_signal",
]
