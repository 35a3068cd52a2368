"""Just enough protobuf wire format for the shim's one-shot commands.

``start`` and ``delete`` run as fresh processes on the daemon's critical path; importing the
protobuf runtime and a generated module costs more than the whole rest of ``start``. Their four
messages are small and fixed, so they are coded by hand here (and checked against the generated
classes in the unit tests):

* ``containerd.runtime.bootstrap.v1.BootstrapParams`` (decode) and ``BootstrapResult`` (encode),
* ``google.protobuf.Any`` and ``containerd.runc.v1.Options`` (decode, from bootstrap extensions),
* ``containerd.task.v2.DeleteResponse`` (encode).
"""

from __future__ import annotations

from arun.shim.util import record

VARINT, I64, LEN, I32 = 0, 1, 2, 5

Fields = dict[int, list[int | bytes]]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def decode(data: bytes) -> Fields:
    """Field number → values (ints for varint/fixed, bytes for length-delimited)."""
    out: Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        value: int | bytes
        if kind == VARINT:
            value, pos = _varint(data, pos)
        elif kind == LEN:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif kind == I64:
            if pos + 8 > len(data):
                raise ValueError("truncated fixed64")
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif kind == I32:
            if pos + 4 > len(data):
                raise ValueError("truncated fixed32")
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {kind}")
        out.setdefault(number, []).append(value)
    return out


def _string(fields: Fields, number: int) -> str:
    values = fields.get(number)
    if not values:
        return ""
    value = values[-1]
    if not isinstance(value, bytes):
        raise ValueError(f"field {number} is not a string")
    return value.decode("utf-8")  # UnicodeDecodeError is a ValueError


def _int(fields: Fields, number: int) -> int:
    """A signed varint field (int32/int64/enum: negatives are 64-bit two's complement)."""
    values = fields.get(number)
    if not values:
        return 0
    value = values[-1]
    if not isinstance(value, int):
        raise ValueError(f"field {number} is not a number")
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _length_prefixed(value: bytes) -> bytes:
    return _encode_varint(len(value)) + value


def _key(number: int, kind: int) -> bytes:
    return _encode_varint(number << 3 | kind)


def encode_varint_field(number: int, value: int) -> bytes:
    return _key(number, VARINT) + _encode_varint(value) if value else b""


def encode_bytes_field(number: int, value: bytes) -> bytes:
    return _key(number, LEN) + _encode_varint(len(value)) + value if value else b""


@record
class AnyMessage:
    type_url: str = ""
    value: bytes = b""

    @classmethod
    def decode(cls, data: bytes) -> AnyMessage:
        f = decode(data)
        raw = f.get(2, [b""])[-1]
        if not isinstance(raw, bytes):
            raise ValueError("Any.value is not bytes")
        return cls(_string(f, 1), raw)

    def encode(self) -> bytes:
        return encode_bytes_field(1, self.type_url.encode()) + encode_bytes_field(2, self.value)


@record
class BootstrapParams:
    instance_id: str = ""
    namespace: str = ""
    log_level: int = 0
    containerd_version: str = ""
    containerd_ttrpc_address: str = ""
    containerd_grpc_address: str = ""
    containerd_binary: str = ""
    extensions: list[AnyMessage] = []
    socket_dir: str | None = None

    @classmethod
    def decode(cls, data: bytes) -> BootstrapParams:
        f = decode(data)
        extensions = []
        for raw in f.get(8, []):
            if not isinstance(raw, bytes):
                raise ValueError("extension is not a message")
            ext = decode(raw)
            value = ext.get(1, [b""])[-1]
            if not isinstance(value, bytes):
                raise ValueError("extension value is not a message")
            extensions.append(AnyMessage.decode(value))
        return cls(
            instance_id=_string(f, 1),
            namespace=_string(f, 2),
            log_level=_int(f, 3),
            containerd_version=_string(f, 4),
            containerd_ttrpc_address=_string(f, 5),
            containerd_grpc_address=_string(f, 6),
            containerd_binary=_string(f, 7),
            extensions=extensions,
            socket_dir=_string(f, 9) if 9 in f else None,
        )

    def encode(self) -> bytes:
        """(For tests and for arun's own daemon.)"""
        out = [
            encode_bytes_field(1, self.instance_id.encode()),
            encode_bytes_field(2, self.namespace.encode()),
            encode_varint_field(3, self.log_level),
            encode_bytes_field(4, self.containerd_version.encode()),
            encode_bytes_field(5, self.containerd_ttrpc_address.encode()),
            encode_bytes_field(6, self.containerd_grpc_address.encode()),
            encode_bytes_field(7, self.containerd_binary.encode()),
        ]
        for ext in self.extensions:
            extension = _key(1, LEN) + _length_prefixed(ext.encode())
            out.append(_key(8, LEN) + _length_prefixed(extension))
        if self.socket_dir is not None:  # optional: present even when empty
            out.append(_key(9, LEN) + _length_prefixed(self.socket_dir.encode()))
        return b"".join(out)


def looks_like_bootstrap(data: bytes) -> BootstrapParams | None:
    """``data`` as BootstrapParams, or None if it is something else (a runtime options Any, as
    containerd before 2.3 sends). A BootstrapParams from containerd always carries fields past
    the first two; an Any has only ``type_url`` (1) and ``value`` (2)."""
    try:
        fields = decode(data)
        if not any(n > 2 for n in fields):
            return None
        params = BootstrapParams.decode(data)
    except ValueError:
        return None
    return params if params.namespace else None


@record
class RuncOptions:
    """The parts of ``containerd.runc.v1.Options`` the server needs as defaults."""

    binary_name: str = ""
    root: str = ""
    systemd_cgroup: bool = False

    @classmethod
    def from_any(cls, any_: AnyMessage) -> RuncOptions | None:
        if any_.type_url.rsplit("/", 1)[-1] != "containerd.runc.v1.Options":
            return None
        f = decode(any_.value)
        return cls(_string(f, 6), _string(f, 7), bool(_int(f, 9)))


def bootstrap_result(address: str, version: int = 3, protocol: str = "ttrpc") -> bytes:
    return (
        encode_varint_field(1, version)
        + encode_bytes_field(2, address.encode())
        + encode_bytes_field(3, protocol.encode())
    )


def delete_response(pid: int, exit_status: int, exited_at_ns: int) -> bytes:
    seconds, nanos = divmod(exited_at_ns, 1_000_000_000)
    ts = encode_varint_field(1, seconds) + encode_varint_field(2, nanos)
    head = encode_varint_field(1, pid) + encode_varint_field(2, exit_status)
    return head + _key(3, LEN) + _length_prefixed(ts)
