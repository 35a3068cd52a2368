"""The shim's table-declared messages encode and decode exactly as the generated protobuf classes."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message as PbMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arun.shim import litepb
from arun.ttrpc import envelope, lite

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))
import genlite  # noqa: E402

_DESCRIPTORS: dict[str, Descriptor] = {
    d.full_name: d for d in genlite.ordered(genlite.roots() + genlite.roots(genlite.ENVELOPE))
}
_CLASSES: dict[str, type[lite.Message]] = {**envelope.BY_NAME, **litepb.BY_NAME}


def _scalar(f: FieldDescriptor, i: int) -> Any:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return f"s{i}-ü"
    if t == FieldDescriptor.TYPE_BYTES:
        return bytes([i, 0, 255])
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 1.5 + i
    if t == FieldDescriptor.TYPE_ENUM:
        return f.enum_type.values[-1].number
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return -7 - i if i % 2 else 300 + i
    return 300 + i  # unsigned


def _fill(pb: PbMessage, depth: int = 0) -> None:
    """Every field of ``pb`` set to a non-default value (negative where signed), two items a list."""
    for i, f in enumerate(pb.DESCRIPTOR.fields):
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_f, value_f = f.message_type.fields
            if value_f.message_type is None:
                getattr(pb, f.name)[_scalar(key_f, i)] = _scalar(value_f, i)
            continue
        repeated = f.is_repeated
        if f.message_type is not None:
            if depth > 4:
                continue
            if f.message_type.full_name == "google.protobuf.Any":
                if repeated:
                    getattr(pb, f.name).add(type_url="t/x", value=b"\x08\x01")
                else:
                    getattr(pb, f.name).type_url = "t/x"
                    getattr(pb, f.name).value = b"\x08\x01"
                continue
            items = [getattr(pb, f.name).add() for _ in range(2)] if repeated else [getattr(pb, f.name)]
            for sub in items:
                _fill(sub, depth + 1)
                if not sub.ByteSize():
                    sub.SetInParent()
        elif repeated:
            getattr(pb, f.name).extend([_scalar(f, i), _scalar(f, i + 1)])
        elif f.containing_oneof is not None and i % 2:
            continue  # leave some oneof members to the others
        else:
            setattr(pb, f.name, _scalar(f, i))


def _generated(full_name: str) -> type[PbMessage]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(_DESCRIPTORS[full_name])  # type: ignore[no-any-return]


NAMES = sorted(_CLASSES)


@pytest.mark.parametrize("name", NAMES)
def test_lite_decodes_and_reencodes_generated_bytes(name: str) -> None:
    pb = _generated(name)()
    _fill(pb)
    data = pb.SerializeToString()
    msg = _CLASSES[name].FromString(data)
    assert msg.SerializeToString() == data
    assert _generated(name).FromString(msg.SerializeToString()) == pb


def _copy(pb: PbMessage, cls: type[lite.Message]) -> lite.Message:
    """The same values put into a lite message field by field, through its public surface."""
    kwargs: dict[str, Any] = {}
    for f, value in pb.ListFields():
        lf = cls._BY_NAME[f.name]
        if lf.kind == "map":
            kwargs[f.name] = dict(value)
        elif lf.kind == "message" and lf.repeated:
            kwargs[f.name] = [_copy(v, lf.message) for v in value]
        elif lf.kind == "message":
            kwargs[f.name] = _copy(value, lf.message)
        elif lf.repeated:
            kwargs[f.name] = list(value)
        else:
            kwargs[f.name] = value
    return cls(**kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_lite_encodes_like_generated(name: str) -> None:
    pb = _generated(name)()
    _fill(pb)
    assert _copy(pb, _CLASSES[name]).SerializeToString() == pb.SerializeToString()


def test_defaults_nested_access_and_negative_varints() -> None:
    req = litepb.containerd_task_v2_CreateTaskRequest()
    assert req.id == "" and req.terminal is False and req.rootfs == [] and not req.HasField("options")
    assert req.options.type_url == ""  # a read adds nothing
    assert req.SerializeToString() == b""
    req.options.SetInParent()
    assert req.HasField("options") and req.SerializeToString() == b"\x52\x00"
    req.options.value = b"x"
    assert req.HasField("options")
    assert req.SerializeToString() == b"\x52\x03\x12\x01x"
    ev = litepb.containerd_events_TaskExit(exit_status=2**32 - 1)
    st = envelope.google_rpc_Status(code=-1)
    assert st.SerializeToString() == b"\x08" + b"\xff" * 9 + b"\x01"
    assert envelope.google_rpc_Status.FromString(st.SerializeToString()).code == -1
    assert litepb.containerd_events_TaskExit.FromString(ev.SerializeToString()).exit_status == 2**32 - 1
    with pytest.raises(AttributeError):
        req.nope = 1
    with pytest.raises(lite.DecodeError):
        envelope.google_rpc_Status.FromString(b"\x0a\x05ab")


def test_generated_module_is_current() -> None:
    assert pathlib.Path(genlite.OUT).read_text() == genlite.render()
    assert pathlib.Path(genlite.ENVELOPE_OUT).read_text() == genlite.render(genlite.ENVELOPE)


def test_codec_imports_no_protobuf() -> None:
    code = (
        "import sys, arun.ttrpc, arun.shim.litepb;"
        " print(sorted(m for m in sys.modules if m.startswith('google') or 'pb2' in m))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_zygote_warm_image_imports_no_protobuf() -> None:
    code = (
        "from arun.runtime import zygote; zygote.warm(); import sys;"
        " print(sorted(m for m in sys.modules if m.startswith('google') or 'pb2' in m))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), ARUN_ZYGOTE_REHEARSAL="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# Modules only the shim's own code used to import (through shutil, tempfile and urllib.parse),
# ~0.8 MiB of every zygote's image: arun.shim.util has small stand-ins.
_KEPT_OUT_OF_WARM_IMAGE = (
    # asyncio loads it (and libssl, libcrypto: MiBs) unless the shim keeps it out before asyncio
    # is first imported: an import of asyncio ahead of warm() (at the top of zygote.py) did that.
    "_ssl",
    "shutil",
    "bz2",
    "_bz2",
    "lzma",
    "_lzma",
    "fnmatch",
    "zlib",
    "tempfile",
    "random",
    "_random",
    "_sha512",
    "urllib",
    "urllib.parse",
    "ipaddress",
)


def test_zygote_warm_image_is_slim() -> None:
    """After ``warm()`` (rehearsal included) none of the modules above is imported, and the
    source lines the rehearsal's traceback read are not kept in linecache."""
    code = (
        "from arun.runtime import zygote; zygote.warm(); import sys, linecache;"
        f" print(sorted(m for m in {_KEPT_OUT_OF_WARM_IMAGE!r} if m in sys.modules));"
        " print(len(linecache.cache))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), ARUN_ZYGOTE_REHEARSAL="1")
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-2:] == ["[]", "0"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(NAMES), st.binary(max_size=64))
def test_hostile_bytes_decode_or_raise_decode_error(name: str, data: bytes) -> None:
    """Whatever a peer sends, decoding either yields a message or raises the codec's own
    DecodeError (which the ttrpc server answers with InvalidArgument) — nothing else escapes."""
    try:
        msg = _CLASSES[name].FromString(data)
    except lite.DecodeError:
        return
    msg.SerializeToString()  # what was accepted encodes again


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05ab",  # a string longer than what follows
        b"\x08",  # a key and no varint
        b"\x08" + b"\xff" * 11,  # a varint of more than ten bytes
        b"\x0b",  # wire type 3 (a group)
        b"\x00\x01",  # field number 0
    ],
)
def test_malformed_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(lite.DecodeError):
        litepb.containerd_task_v2_CreateTaskRequest.FromString(data)


def test_message_field_with_a_scalar_wire_type_is_a_decode_error() -> None:
    # CreateTaskRequest.options (field 10) is a message; a varint there is malformed
    with pytest.raises(lite.DecodeError):
        litepb.containerd_task_v2_CreateTaskRequest.FromString(b"\x50\x01")


def test_assigning_a_default_makes_a_sub_message_present_like_protobuf() -> None:
    """``m.memory_oom_control.oom_kill = 0`` puts an empty ``memory_oom_control`` on the wire (the
    Go shim's Stats carries it so); a mere read does not."""
    from arun.api.cgroups.v1 import metrics_pb2

    ours, theirs = litepb.io_containerd_cgroups_v1_Metrics(), metrics_pb2.Metrics()
    for m in (ours, theirs):
        m.memory_oom_control.oom_kill = 0
        _ = m.pids.limit  # read only
    assert ours.SerializeToString() == theirs.SerializeToString() == b"\x4a\x00"  # field 9, empty
    assert ours.HasField("memory_oom_control") and not ours.HasField("pids")
