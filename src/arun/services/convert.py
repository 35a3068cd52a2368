"""Conversions between protobuf messages and core types shared by the services."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from google.protobuf import any_pb2, timestamp_pb2

from arun.api.containerd.types import descriptor_pb2, mount_pb2
from arun.core import typeurl
from arun.core.content import Descriptor
from arun.core.mount import Mount

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(dt: datetime | None) -> timestamp_pb2.Timestamp | None:
    if dt is None:
        return None
    # What ``Timestamp.FromDatetime`` computes, at a third of its cost (two per Info reply).
    since = (dt if dt.tzinfo is not None else dt.astimezone(UTC)) - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000
    )


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    result: datetime = ts.ToDatetime(tzinfo=UTC)
    return result


def any_to_pb(v: typeurl.Any | None) -> any_pb2.Any | None:
    return None if v is None else any_pb2.Any(type_url=v.type_url, value=v.value)


def any_from_pb(v: any_pb2.Any) -> typeurl.Any:
    return typeurl.Any(v.type_url, v.value)


def anys_to_pb(m: Mapping[str, typeurl.Any]) -> dict[str, any_pb2.Any]:
    return {k: any_pb2.Any(type_url=v.type_url, value=v.value) for k, v in m.items()}


def descriptor_to_pb(d: Descriptor) -> descriptor_pb2.Descriptor:
    return descriptor_pb2.Descriptor(
        media_type=d.media_type, digest=d.digest, size=d.size, annotations=dict(d.annotations)
    )


def descriptor_from_pb(d: descriptor_pb2.Descriptor) -> Descriptor:
    return Descriptor(d.media_type, d.digest, d.size, dict(d.annotations))


def mounts_to_pb(mounts: Iterable[Mount]) -> list[mount_pb2.Mount]:
    return [
        mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options))
        for m in mounts
    ]


def mounts_from_pb(mounts: Iterable[mount_pb2.Mount]) -> list[Mount]:
    return [Mount(m.type, m.source, tuple(m.options), m.target) for m in mounts]


def field_paths(msg: object, field: str = "update_mask") -> list[str]:
    """The paths of an optional FieldMask field (none if unset)."""
    if msg.HasField(field):  # type: ignore[attr-defined]
        return list(getattr(msg, field).paths)
    return []
