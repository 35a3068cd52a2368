"""Between protobuf messages and the client's dataclasses (private)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import any_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message

from arun import errdefs
from arun.client.types import (
    ContainerInfo,
    Descriptor,
    ImageInfo,
    Mount,
    RuncOptions,
    SnapshotInfo,
    TaskState,
    TaskStatus,
)

SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options"
RUNC_RUNTIME = "io.containerd.runc.v2"


def timestamp(ts: timestamp_pb2.Timestamp | None) -> datetime | None:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)


def descriptor(d: Any) -> Descriptor:
    return Descriptor(
        media_type=d.media_type, digest=d.digest, size=int(d.size), annotations=dict(d.annotations)
    )


def descriptor_pb(d: Descriptor) -> Any:
    from arun.api.containerd.types import descriptor_pb2

    return descriptor_pb2.Descriptor(
        media_type=d.media_type, digest=d.digest, size=d.size, annotations=dict(d.annotations)
    )


def image(i: Any) -> ImageInfo:
    return ImageInfo(
        name=i.name,
        target=descriptor(i.target),
        labels=dict(i.labels),
        created_at=timestamp(i.created_at),
        updated_at=timestamp(i.updated_at),
    )


def mount(m: Any) -> Mount:
    return Mount(type=m.type, source=m.source, target=m.target, options=tuple(m.options))


def mount_pb(m: Mount) -> Any:
    from arun.api.containerd.types import mount_pb2

    return mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options))


def pack_json(type_url: str, doc: Mapping[str, Any]) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=json.dumps(doc, separators=(",", ":")).encode())


def unpack_json(a: any_pb2.Any) -> dict[str, Any]:
    if not a.value:
        return {}
    try:
        doc = json.loads(a.value)
    except ValueError as e:
        raise errdefs.DataLossError(f"{a.type_url}: not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise errdefs.DataLossError(f"{a.type_url}: not a JSON object")
    return doc


def runc_options_pb(o: RuncOptions) -> any_pb2.Any:
    from arun.api.containerd.types.runc.options import oci_pb2

    msg = oci_pb2.Options(
        binary_name=o.binary_name,
        root=o.root,
        systemd_cgroup=o.systemd_cgroup,
        no_pivot_root=o.no_pivot_root,
        no_new_keyring=o.no_new_keyring,
    )
    return any_pb2.Any(type_url=RUNC_OPTIONS_TYPE, value=msg.SerializeToString())


def runc_options(a: any_pb2.Any) -> RuncOptions | None:
    if not a.type_url or a.type_url.rsplit("/", 1)[-1] != RUNC_OPTIONS_TYPE:
        return None
    from arun.api.containerd.types.runc.options import oci_pb2

    msg = oci_pb2.Options.FromString(a.value)
    return RuncOptions(
        binary_name=msg.binary_name,
        root=msg.root,
        systemd_cgroup=msg.systemd_cgroup,
        no_pivot_root=msg.no_pivot_root,
        no_new_keyring=msg.no_new_keyring,
    )


def container(c: Any) -> ContainerInfo:
    spec: dict[str, Any] = {}
    if c.HasField("spec"):
        spec = unpack_json(c.spec)
    return ContainerInfo(
        id=c.id,
        image=c.image,
        runtime=c.runtime.name,
        spec=spec,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        labels=dict(c.labels),
        created_at=timestamp(c.created_at),
        updated_at=timestamp(c.updated_at),
        runtime_options=runc_options(c.runtime.options) if c.runtime.HasField("options") else None,
    )


_KINDS = {0: "unknown", 1: "view", 2: "active", 3: "committed"}


def snapshot_info(i: Any) -> SnapshotInfo:
    return SnapshotInfo(
        name=i.name,
        parent=i.parent,
        kind=_KINDS.get(int(i.kind), "unknown"),
        labels=dict(i.labels),
        created_at=timestamp(i.created_at),
        updated_at=timestamp(i.updated_at),
    )


_STATUS = {
    0: TaskStatus.UNKNOWN,
    1: TaskStatus.CREATED,
    2: TaskStatus.RUNNING,
    3: TaskStatus.STOPPED,
    4: TaskStatus.PAUSED,
    5: TaskStatus.PAUSING,
}


def task_state(p: Any) -> TaskState:
    return TaskState(
        id=p.container_id or p.id,
        exec_id=p.id if p.container_id and p.id != p.container_id else "",
        pid=int(p.pid),
        status=_STATUS.get(int(p.status), TaskStatus.UNKNOWN),
        terminal=bool(p.terminal),
        exit_status=int(p.exit_status),
        exited_at=timestamp(p.exited_at),
    )


def message_dict(m: Message) -> dict[str, Any]:
    """A message's fields as JSON-shaped data with the proto's snake_case names."""
    out: dict[str, Any] = json_format.MessageToDict(m, preserving_proto_field_name=True)
    return out


def decode_any(a: any_pb2.Any) -> tuple[str, dict[str, Any]]:
    """(type name, fields) of an Any whose type is in the loaded descriptor pool; raw bytes otherwise."""
    from google.protobuf import descriptor_pool, message_factory

    name = a.type_url.rsplit("/", 1)[-1]
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return name, {"value": a.value.hex()} if a.value else {}
    cls = message_factory.GetMessageClass(desc)
    msg = cls.FromString(a.value)
    return name, message_dict(msg)
