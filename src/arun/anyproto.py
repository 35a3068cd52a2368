"""``google.protobuf.Any`` the way containerd's typeurl writes it: the type URL is the
message's full name with no ``type.googleapis.com/`` prefix (``containerd.types.transfer.
OCIRegistry``); both forms are accepted when reading."""

from __future__ import annotations

from typing import TypeVar, cast

from google.protobuf import any_pb2, message

from arun.errdefs import InvalidArgumentError

__all__ = ["is_type", "pack", "type_name", "unpack"]

M = TypeVar("M", bound=message.Message)


def pack(msg: message.Message) -> any_pb2.Any:
    return any_pb2.Any(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


def type_name(a: any_pb2.Any) -> str:
    """The message name of ``a`` (its type URL without any ``host/`` prefix)."""
    return str(a.type_url).rsplit("/", 1)[-1]


def is_type(a: any_pb2.Any, cls: type[message.Message]) -> bool:
    return type_name(a) == str(cls.DESCRIPTOR.full_name)


def unpack(a: any_pb2.Any, cls: type[M]) -> M:
    if not is_type(a, cls):
        raise InvalidArgumentError(f"expected {cls.DESCRIPTOR.full_name}, got {a.type_url!r}")
    out = cast(M, cls())
    try:
        out.ParseFromString(a.value)
    except message.DecodeError as exc:
        raise InvalidArgumentError(f"malformed {cls.DESCRIPTOR.full_name}: {exc}") from None
    return out
