"""The generated containerd API modules: services, methods and streaming shape, a few wire
numbers checked against hand-encoded bytes, and the type names that Any values carry."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import grpclib.const
import pytest
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor

from arun.api.cgroups.v1 import metrics_pb2 as cg1_pb2
from arun.api.cgroups.v2 import metrics_pb2 as cg2_pb2
from arun.api.containerd.events import image_pb2 as image_events_pb2
from arun.api.containerd.events import task_pb2 as task_events_pb2
from arun.api.containerd.runtime.task.v2 import shim_pb2 as shim_v2_pb2
from arun.api.containerd.runtime.task.v3 import shim_pb2 as shim_v3_pb2
from arun.api.containerd.services.events.v1 import events_pb2
from arun.api.containerd.types import event_pb2, mount_pb2
from arun.api.containerd.types.runc.options import oci_pb2
from arun.api.containerd.types.task import task_pb2

U = grpclib.const.Cardinality.UNARY_UNARY
SS = grpclib.const.Cardinality.UNARY_STREAM
BI = grpclib.const.Cardinality.STREAM_STREAM

SHIM_TASK_METHODS = [
    "State", "Create", "Start", "Delete", "Pids", "Pause", "Resume", "Checkpoint", "Kill", "Exec",
    "ResizePty", "CloseIO", "Update", "Wait", "Stats", "Connect", "Shutdown",
]  # fmt: skip

# (module under arun.api, full service name, {method: cardinality}) for every service the
# daemon serves over gRPC. Unlisted cardinalities would be a wire break for streaming clients.
GRPC_SERVICES: list[tuple[str, str, dict[str, grpclib.const.Cardinality]]] = [
    ("containerd.services.containers.v1.containers", "containerd.services.containers.v1.Containers",
     {"Get": U, "List": U, "ListStream": SS, "Create": U, "Update": U, "Delete": U}),
    ("containerd.services.content.v1.content", "containerd.services.content.v1.Content",
     {"Info": U, "Update": U, "List": SS, "Delete": U, "Read": SS, "Status": U, "ListStatuses": U,
      "Write": BI, "Abort": U}),
    ("containerd.services.diff.v1.diff", "containerd.services.diff.v1.Diff", {"Apply": U, "Diff": U}),
    ("containerd.services.events.v1.events", "containerd.services.events.v1.Events",
     {"Publish": U, "Forward": U, "Subscribe": SS}),
    ("containerd.services.images.v1.images", "containerd.services.images.v1.Images",
     {"Get": U, "List": U, "Create": U, "Update": U, "Delete": U}),
    ("containerd.services.introspection.v1.introspection",
     "containerd.services.introspection.v1.Introspection", {"Plugins": U, "Server": U, "PluginInfo": U}),
    ("containerd.services.leases.v1.leases", "containerd.services.leases.v1.Leases",
     {"Create": U, "Delete": U, "List": U, "AddResource": U, "DeleteResource": U, "ListResources": U}),
    ("containerd.services.namespaces.v1.namespace", "containerd.services.namespaces.v1.Namespaces",
     {"Get": U, "List": U, "Create": U, "Update": U, "Delete": U}),
    ("containerd.services.snapshots.v1.snapshots", "containerd.services.snapshots.v1.Snapshots",
     {"Prepare": U, "View": U, "Mounts": U, "Commit": U, "Remove": U, "Stat": U, "Update": U,
      "List": SS, "Usage": U, "Cleanup": U}),
    ("containerd.services.tasks.v1.tasks", "containerd.services.tasks.v1.Tasks",
     {"Create": U, "Start": U, "Delete": U, "DeleteProcess": U, "Get": U, "List": U, "Kill": U,
      "Exec": U, "ResizePty": U, "CloseIO": U, "Pause": U, "Resume": U, "ListPids": U,
      "Checkpoint": U, "Update": U, "Metrics": U, "Wait": U}),
    ("containerd.services.version.v1.version", "containerd.services.version.v1.Version", {"Version": U}),
    ("containerd.services.sandbox.v1.sandbox", "containerd.services.sandbox.v1.Store",
     {"Create": U, "Update": U, "Delete": U, "List": U, "Get": U}),
    ("containerd.services.sandbox.v1.sandbox", "containerd.services.sandbox.v1.Controller",
     {"Create": U, "Start": U, "Platform": U, "Stop": U, "Wait": U, "Status": U, "Shutdown": U,
      "Metrics": U, "Update": U}),
    ("containerd.services.transfer.v1.transfer", "containerd.services.transfer.v1.Transfer",
     {"Transfer": U}),
    ("containerd.services.streaming.v1.streaming", "containerd.services.streaming.v1.Streaming",
     {"Stream": BI}),
    ("containerd.services.mounts.v1.mounts", "containerd.services.mounts.v1.Mounts",
     {"Activate": U, "Deactivate": U, "Info": U, "Update": U, "List": SS}),
]  # fmt: skip

# Services spoken over ttrpc (unary only), by the daemon or by shims.
TTRPC_SERVICES: list[tuple[str, str, list[str]]] = [
    ("containerd.services.ttrpc.events.v1.events", "containerd.services.events.ttrpc.v1.Events", ["Forward"]),
    ("containerd.runtime.task.v2.shim", "containerd.task.v2.Task", SHIM_TASK_METHODS),
    ("containerd.runtime.task.v3.shim", "containerd.task.v3.Task", SHIM_TASK_METHODS),
    ("containerd.runtime.sandbox.v1.sandbox", "containerd.runtime.sandbox.v1.Sandbox",
     ["CreateSandbox", "StartSandbox", "Platform", "StopSandbox", "WaitSandbox", "SandboxStatus",
      "PingSandbox", "ShutdownSandbox", "SandboxMetrics"]),
]  # fmt: skip


def _pb2(module: str) -> ModuleType:
    return importlib.import_module(f"arun.api.{module}_pb2")


def _service(module: str, full_name: str) -> ServiceDescriptor:
    pb2 = _pb2(module)
    package, _, name = full_name.rpartition(".")
    assert pb2.DESCRIPTOR.package == package
    service: ServiceDescriptor = pb2.DESCRIPTOR.services_by_name[name]
    assert service.full_name == full_name
    return service


def _servicer(module: str, service_name: str) -> Any:
    """Instantiate the grpclib base class with every abstract method filled in."""
    base = getattr(importlib.import_module(f"arun.api.{module}_grpc"), f"{service_name}Base")

    async def handler(self: object, stream: object) -> None:
        raise AssertionError("not called")

    concrete = type("Concrete", (base,), {name: handler for name in base.__abstractmethods__})
    return concrete()


@pytest.mark.parametrize(("module", "full_name", "methods"), GRPC_SERVICES, ids=lambda v: str(v)[:60])
def test_grpc_service_methods_and_streaming(
    module: str, full_name: str, methods: dict[str, grpclib.const.Cardinality]
) -> None:
    service = _service(module, full_name)
    assert [m.name for m in service.methods] == list(methods)
    for m in service.methods:
        streaming = (m.client_streaming, m.server_streaming)
        assert streaming == {U: (False, False), SS: (False, True), BI: (True, True)}[methods[m.name]]

    mapping = _servicer(module, service.name).__mapping__()
    assert set(mapping) == {f"/{full_name}/{name}" for name in methods}
    for name, cardinality in methods.items():
        handler = mapping[f"/{full_name}/{name}"]
        assert handler.cardinality is cardinality
        method = service.methods_by_name[name]
        assert handler.request_type.DESCRIPTOR.full_name == method.input_type.full_name
        assert handler.reply_type.DESCRIPTOR.full_name == method.output_type.full_name


@pytest.mark.parametrize(("module", "full_name", "methods"), TTRPC_SERVICES, ids=lambda v: str(v)[:60])
def test_ttrpc_service_methods(module: str, full_name: str, methods: list[str]) -> None:
    service = _service(module, full_name)
    assert [m.name for m in service.methods] == methods
    assert not any(m.client_streaming or m.server_streaming for m in service.methods)


def test_every_generated_service_is_listed() -> None:
    listed = {full for _, full, _ in GRPC_SERVICES} | {full for _, full, _ in TTRPC_SERVICES}
    found = set()
    for module in {m for m, _, _ in GRPC_SERVICES} | {m for m, _, _ in TTRPC_SERVICES}:
        found |= {s.full_name for s in _pb2(module).DESCRIPTOR.services_by_name.values()}
    assert found == listed


def _numbers(descriptor: Any) -> dict[str, int]:
    return {f.name: f.number for f in descriptor.fields}


@pytest.mark.parametrize("pb2", [shim_v2_pb2, shim_v3_pb2], ids=["v2", "v3"])
def test_shim_create_and_state_field_numbers(pb2: ModuleType) -> None:
    create = pb2.CreateTaskRequest.DESCRIPTOR
    assert _numbers(create) == {
        "id": 1, "bundle": 2, "rootfs": 3, "terminal": 4, "stdin": 5, "stdout": 6, "stderr": 7,
        "checkpoint": 8, "parent_checkpoint": 9, "options": 10,
    }  # fmt: skip
    rootfs = create.fields_by_name["rootfs"]
    assert rootfs.is_repeated
    assert rootfs.message_type.full_name == "containerd.types.Mount"
    assert create.fields_by_name["options"].message_type.full_name == "google.protobuf.Any"

    state = pb2.StateResponse.DESCRIPTOR
    assert _numbers(state) == {
        "id": 1, "bundle": 2, "pid": 3, "status": 4, "stdin": 5, "stdout": 6, "stderr": 7,
        "terminal": 8, "exit_status": 9, "exited_at": 10, "exec_id": 11,
    }  # fmt: skip
    assert state.fields_by_name["status"].enum_type.full_name == "containerd.v1.types.Status"
    assert state.fields_by_name["pid"].type == FieldDescriptor.TYPE_UINT32


def test_shim_v2_and_v3_are_the_same_shape() -> None:
    v2, v3 = shim_v2_pb2.DESCRIPTOR, shim_v3_pb2.DESCRIPTOR
    assert set(v2.message_types_by_name) == set(v3.message_types_by_name)
    for name, message in v2.message_types_by_name.items():
        other = v3.message_types_by_name[name]
        assert [(f.name, f.number, f.type, f.is_repeated) for f in message.fields] == [
            (f.name, f.number, f.type, f.is_repeated) for f in other.fields
        ]


def test_status_enum_numbers() -> None:
    assert {v.name: v.number for v in task_pb2.DESCRIPTOR.enum_types_by_name["Status"].values} == {
        "UNKNOWN": 0, "CREATED": 1, "RUNNING": 2, "STOPPED": 3, "PAUSED": 4, "PAUSING": 5,
    }  # fmt: skip


def test_envelope_and_task_exit_field_numbers() -> None:
    assert _numbers(event_pb2.Envelope.DESCRIPTOR) == {"timestamp": 1, "namespace": 2, "topic": 3, "event": 4}
    assert _numbers(task_events_pb2.TaskExit.DESCRIPTOR) == {
        "container_id": 1, "id": 2, "pid": 3, "exit_status": 4, "exited_at": 5,
    }  # fmt: skip
    # containerd 1.x clients name the envelope in the events package; same fields.
    assert _numbers(events_pb2.Envelope.DESCRIPTOR) == _numbers(event_pb2.Envelope.DESCRIPTOR)


def test_type_names_used_in_any_values() -> None:
    # typeurl puts these full names into Any.type_url; a different package breaks decoding.
    assert task_events_pb2.TaskExit.DESCRIPTOR.full_name == "containerd.events.TaskExit"
    assert image_events_pb2.ImageCreate.DESCRIPTOR.full_name == "containerd.services.images.v1.ImageCreate"
    assert oci_pb2.Options.DESCRIPTOR.full_name == "containerd.runc.v1.Options"
    assert cg1_pb2.Metrics.DESCRIPTOR.full_name == "io.containerd.cgroups.v1.Metrics"
    assert cg2_pb2.Metrics.DESCRIPTOR.full_name == "io.containerd.cgroups.v2.Metrics"


# TaskExit{container_id "c1", id "c1", pid 42, exit_status 137, exited_at {seconds 5}}, encoded by
# hand: tag = number << 3 | wire type (0 varint, 2 length-delimited).
TASK_EXIT_WIRE = (
    b"\x0a\x02c1"  # 1: container_id
    b"\x12\x02c1"  # 2: id
    b"\x18\x2a"  # 3: pid 42
    b"\x20\x89\x01"  # 4: exit_status 137
    b"\x2a\x02\x08\x05"  # 5: exited_at {1: seconds 5}
)


def test_task_exit_matches_hand_encoded_bytes() -> None:
    exit_event = task_events_pb2.TaskExit(
        container_id="c1", id="c1", pid=42, exit_status=137, exited_at=timestamp_pb2.Timestamp(seconds=5)
    )
    assert exit_event.SerializeToString() == TASK_EXIT_WIRE
    assert task_events_pb2.TaskExit.FromString(TASK_EXIT_WIRE) == exit_event


def test_envelope_round_trip_with_task_exit() -> None:
    inner = any_pb2.Any(type_url="containerd.events.TaskExit", value=TASK_EXIT_WIRE)
    envelope = event_pb2.Envelope(
        timestamp=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=7),
        namespace="default",
        topic="/tasks/exit",
        event=inner,
    )
    wire = envelope.SerializeToString()
    # The topic is field 3, length-delimited: tag 0x1a.
    assert b"\x1a\x0b/tasks/exit" in wire
    back = event_pb2.Envelope.FromString(wire)
    assert back == envelope
    # The 1.x envelope type decodes the same bytes.
    legacy = events_pb2.Envelope.FromString(wire)
    assert (legacy.namespace, legacy.topic) == ("default", "/tasks/exit")
    assert legacy.event == inner
    # containerd's typeurl writes the bare full name, without a "type.googleapis.com/" prefix.
    assert back.event.type_url == task_events_pb2.TaskExit.DESCRIPTOR.full_name
    decoded = task_events_pb2.TaskExit.FromString(back.event.value)
    assert (decoded.container_id, decoded.pid, decoded.exit_status) == ("c1", 42, 137)


def test_shim_create_round_trip() -> None:
    request = shim_v2_pb2.CreateTaskRequest(
        id="ctr",
        bundle="/run/arun/bundle/ctr",
        rootfs=[mount_pb2.Mount(type="overlay", source="overlay", options=["lowerdir=/a", "upperdir=/b"])],
        stdin="/fifo/in",
        options=any_pb2.Any(
            type_url="containerd.runc.v1.Options",
            value=oci_pb2.Options(binary_name="runc", systemd_cgroup=True).SerializeToString(),
        ),
    )
    wire = request.SerializeToString()
    assert wire.startswith(b"\x0a\x03ctr\x12\x14/run/arun/bundle/ctr")
    back = shim_v3_pb2.CreateTaskRequest.FromString(wire)  # v2 and v3 share the wire format
    assert back.rootfs[0].options == ["lowerdir=/a", "upperdir=/b"]
    assert back.options.type_url == oci_pb2.Options.DESCRIPTOR.full_name
    options = oci_pb2.Options.FromString(back.options.value)
    assert (options.binary_name, options.systemd_cgroup) == ("runc", True)
