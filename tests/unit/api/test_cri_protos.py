"""The generated CRI v1 API: service surface, pinned field numbers, wire round trips.

The expectations are written out here by hand (from the cri-api wire contract), so a
slip in protos/cri/runtime/v1/api.proto or in the generator shows up without the
upstream mirror.
"""

from __future__ import annotations

import grpclib.client
import grpclib.const
import pytest
from google.protobuf import descriptor

from arun.api.cri.runtime.v1 import api_grpc, api_pb2

UNARY = False
STREAM = True

# method -> (request type, response type, server streams?). No CRI method streams requests.
RUNTIME_RPCS: dict[str, tuple[str, str, bool]] = {
    "Version": ("VersionRequest", "VersionResponse", UNARY),
    "RunPodSandbox": ("RunPodSandboxRequest", "RunPodSandboxResponse", UNARY),
    "StopPodSandbox": ("StopPodSandboxRequest", "StopPodSandboxResponse", UNARY),
    "RemovePodSandbox": ("RemovePodSandboxRequest", "RemovePodSandboxResponse", UNARY),
    "PodSandboxStatus": ("PodSandboxStatusRequest", "PodSandboxStatusResponse", UNARY),
    "ListPodSandbox": ("ListPodSandboxRequest", "ListPodSandboxResponse", UNARY),
    "StreamPodSandboxes": ("StreamPodSandboxesRequest", "StreamPodSandboxesResponse", STREAM),
    "CreateContainer": ("CreateContainerRequest", "CreateContainerResponse", UNARY),
    "StartContainer": ("StartContainerRequest", "StartContainerResponse", UNARY),
    "StopContainer": ("StopContainerRequest", "StopContainerResponse", UNARY),
    "RemoveContainer": ("RemoveContainerRequest", "RemoveContainerResponse", UNARY),
    "ListContainers": ("ListContainersRequest", "ListContainersResponse", UNARY),
    "StreamContainers": ("StreamContainersRequest", "StreamContainersResponse", STREAM),
    "ContainerStatus": ("ContainerStatusRequest", "ContainerStatusResponse", UNARY),
    "UpdateContainerResources": (
        "UpdateContainerResourcesRequest",
        "UpdateContainerResourcesResponse",
        UNARY,
    ),
    "ReopenContainerLog": ("ReopenContainerLogRequest", "ReopenContainerLogResponse", UNARY),
    "ExecSync": ("ExecSyncRequest", "ExecSyncResponse", UNARY),
    "Exec": ("ExecRequest", "ExecResponse", UNARY),
    "Attach": ("AttachRequest", "AttachResponse", UNARY),
    "PortForward": ("PortForwardRequest", "PortForwardResponse", UNARY),
    "ContainerStats": ("ContainerStatsRequest", "ContainerStatsResponse", UNARY),
    "ListContainerStats": ("ListContainerStatsRequest", "ListContainerStatsResponse", UNARY),
    "StreamContainerStats": ("StreamContainerStatsRequest", "StreamContainerStatsResponse", STREAM),
    "PodSandboxStats": ("PodSandboxStatsRequest", "PodSandboxStatsResponse", UNARY),
    "ListPodSandboxStats": ("ListPodSandboxStatsRequest", "ListPodSandboxStatsResponse", UNARY),
    "StreamPodSandboxStats": ("StreamPodSandboxStatsRequest", "StreamPodSandboxStatsResponse", STREAM),
    "UpdateRuntimeConfig": ("UpdateRuntimeConfigRequest", "UpdateRuntimeConfigResponse", UNARY),
    "Status": ("StatusRequest", "StatusResponse", UNARY),
    "CheckpointContainer": ("CheckpointContainerRequest", "CheckpointContainerResponse", UNARY),
    "CheckpointPod": ("CheckpointPodRequest", "CheckpointPodResponse", UNARY),
    "RestorePod": ("RestorePodRequest", "RestorePodResponse", UNARY),
    "GetContainerEvents": ("GetEventsRequest", "ContainerEventResponse", STREAM),
    "ListMetricDescriptors": ("ListMetricDescriptorsRequest", "ListMetricDescriptorsResponse", UNARY),
    "ListPodSandboxMetrics": ("ListPodSandboxMetricsRequest", "ListPodSandboxMetricsResponse", UNARY),
    "StreamPodSandboxMetrics": ("StreamPodSandboxMetricsRequest", "StreamPodSandboxMetricsResponse", STREAM),
    "RuntimeConfig": ("RuntimeConfigRequest", "RuntimeConfigResponse", UNARY),
    "UpdatePodSandboxResources": (
        "UpdatePodSandboxResourcesRequest",
        "UpdatePodSandboxResourcesResponse",
        UNARY,
    ),
}

IMAGE_RPCS: dict[str, tuple[str, str, bool]] = {
    "ListImages": ("ListImagesRequest", "ListImagesResponse", UNARY),
    "StreamImages": ("StreamImagesRequest", "StreamImagesResponse", STREAM),
    "ImageStatus": ("ImageStatusRequest", "ImageStatusResponse", UNARY),
    "PullImage": ("PullImageRequest", "PullImageResponse", UNARY),
    "RemoveImage": ("RemoveImageRequest", "RemoveImageResponse", UNARY),
    "ImageFsInfo": ("ImageFsInfoRequest", "ImageFsInfoResponse", UNARY),
}

SERVICES = {"RuntimeService": RUNTIME_RPCS, "ImageService": IMAGE_RPCS}


def test_file_package() -> None:
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    assert set(api_pb2.DESCRIPTOR.services_by_name) == set(SERVICES)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_methods(service: str) -> None:
    svc = api_pb2.DESCRIPTOR.services_by_name[service]
    assert svc.full_name == f"runtime.v1.{service}"
    got = {
        m.name: (m.input_type.full_name, m.output_type.full_name, m.server_streaming, m.client_streaming)
        for m in svc.methods
    }
    want = {
        name: (f"runtime.v1.{req}", f"runtime.v1.{resp}", server_streaming, False)
        for name, (req, resp, server_streaming) in SERVICES[service].items()
    }
    assert got == want


def _concrete(base: type) -> object:
    """An instance of a generated grpclib base class with every handler stubbed."""

    async def handler(self: object, stream: object) -> None:
        raise AssertionError("not called")

    return type(f"Fake{base.__name__}", (base,), dict.fromkeys(base.__abstractmethods__, handler))()


@pytest.mark.parametrize(
    ("base", "service"),
    [(api_grpc.RuntimeServiceBase, "RuntimeService"), (api_grpc.ImageServiceBase, "ImageService")],
)
def test_grpclib_handlers(base: type, service: str) -> None:
    mapping = _concrete(base).__mapping__()  # type: ignore[attr-defined]
    expected = SERVICES[service]
    assert set(mapping) == {f"/runtime.v1.{service}/{name}" for name in expected}
    for name, (req, resp, server_streaming) in expected.items():
        handler = mapping[f"/runtime.v1.{service}/{name}"]
        card = (
            grpclib.const.Cardinality.UNARY_STREAM
            if server_streaming
            else grpclib.const.Cardinality.UNARY_UNARY
        )
        assert handler.cardinality is card, name
        assert handler.request_type is getattr(api_pb2, req)
        assert handler.reply_type is getattr(api_pb2, resp)


@pytest.mark.parametrize(
    ("stub_class", "service"),
    [(api_grpc.RuntimeServiceStub, "RuntimeService"), (api_grpc.ImageServiceStub, "ImageService")],
)
def test_client_stubs(stub_class: type, service: str) -> None:
    channel = object()  # the stub only stores it until a call is made
    stub = stub_class(channel)
    for name, (req, resp, server_streaming) in SERVICES[service].items():
        method = getattr(stub, name)
        kind = grpclib.client.UnaryStreamMethod if server_streaming else grpclib.client.UnaryUnaryMethod
        assert type(method) is kind, name
        assert method.name == f"/runtime.v1.{service}/{name}"
        assert method.request_type is getattr(api_pb2, req)
        assert method.reply_type is getattr(api_pb2, resp)


F = descriptor.FieldDescriptor


def _field(message: str, name: str) -> descriptor.FieldDescriptor:
    return api_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name[name]


# (message, field, number, type, repeated?, message/enum type or None)
SPOT_CHECKS = [
    ("PodSandboxConfig", "metadata", 1, F.TYPE_MESSAGE, False, "runtime.v1.PodSandboxMetadata"),
    ("PodSandboxConfig", "log_directory", 3, F.TYPE_STRING, False, None),
    ("PodSandboxConfig", "port_mappings", 5, F.TYPE_MESSAGE, True, "runtime.v1.PortMapping"),
    (
        "PodSandboxConfig",
        "annotations",
        7,
        F.TYPE_MESSAGE,
        True,
        "runtime.v1.PodSandboxConfig.AnnotationsEntry",
    ),
    ("PodSandboxConfig", "linux", 8, F.TYPE_MESSAGE, False, "runtime.v1.LinuxPodSandboxConfig"),
    ("PodSandboxConfig", "windows", 9, F.TYPE_MESSAGE, False, "runtime.v1.WindowsPodSandboxConfig"),
    ("ContainerConfig", "envs", 6, F.TYPE_MESSAGE, True, "runtime.v1.KeyValue"),
    ("ContainerConfig", "log_path", 11, F.TYPE_STRING, False, None),
    ("ContainerConfig", "tty", 14, F.TYPE_BOOL, False, None),
    ("ContainerConfig", "CDI_devices", 17, F.TYPE_MESSAGE, True, "runtime.v1.CDIDevice"),
    ("ContainerConfig", "stop_signal", 18, F.TYPE_ENUM, False, "runtime.v1.Signal"),
    ("LinuxContainerResources", "cpu_period", 1, F.TYPE_INT64, False, None),
    ("LinuxContainerResources", "oom_score_adj", 5, F.TYPE_INT64, False, None),
    ("LinuxContainerResources", "cpuset_mems", 7, F.TYPE_STRING, False, None),
    ("LinuxContainerResources", "hugepage_limits", 8, F.TYPE_MESSAGE, True, "runtime.v1.HugepageLimit"),
    (
        "LinuxContainerResources",
        "unified",
        9,
        F.TYPE_MESSAGE,
        True,
        "runtime.v1.LinuxContainerResources.UnifiedEntry",
    ),
    ("LinuxContainerResources", "memory_swap_limit_in_bytes", 10, F.TYPE_INT64, False, None),
    ("ContainerStatus", "exit_code", 7, F.TYPE_INT32, False, None),
    ("ContainerStatus", "mounts", 14, F.TYPE_MESSAGE, True, "runtime.v1.Mount"),
    ("ContainerStatus", "resources", 16, F.TYPE_MESSAGE, False, "runtime.v1.ContainerResources"),
    ("ContainerStatus", "image_id", 17, F.TYPE_STRING, False, None),
    ("ContainerStatus", "user", 18, F.TYPE_MESSAGE, False, "runtime.v1.ContainerUser"),
    ("ContainerStatus", "stop_signal", 19, F.TYPE_ENUM, False, "runtime.v1.Signal"),
    ("LinuxContainerSecurityContext", "run_as_group", 12, F.TYPE_MESSAGE, False, "runtime.v1.Int64Value"),
    (
        "LinuxContainerSecurityContext",
        "supplemental_groups_policy",
        17,
        F.TYPE_ENUM,
        False,
        "runtime.v1.SupplementalGroupsPolicy",
    ),
    ("LinuxSandboxSecurityContext", "seccomp_profile_path", 7, F.TYPE_STRING, False, None),
    ("Mount", "uidMappings", 6, F.TYPE_MESSAGE, True, "runtime.v1.IDMapping"),
    ("Mount", "mount_options", 11, F.TYPE_STRING, True, None),
    ("ImageSpec", "user_specified_image", 18, F.TYPE_STRING, False, None),
    ("ImageSpec", "image_ref", 20, F.TYPE_STRING, False, None),
    ("KeyValue", "value", 2, F.TYPE_BYTES, False, None),
    ("Namespace", "options", 2, F.TYPE_MESSAGE, False, "runtime.v1.NamespaceOption"),
    ("PsiData", "Avg10", 2, F.TYPE_DOUBLE, False, None),
    ("AttachRequest", "tty", 3, F.TYPE_BOOL, False, None),
    ("ExecRequest", "tty", 3, F.TYPE_BOOL, False, None),
    ("ExecRequest", "stdin", 4, F.TYPE_BOOL, False, None),
]


@pytest.mark.parametrize(("message", "name", "number", "ftype", "repeated", "type_name"), SPOT_CHECKS)
def test_field_numbers(
    message: str, name: str, number: int, ftype: int, repeated: bool, type_name: str | None
) -> None:
    f = _field(message, name)
    assert f.number == number
    assert f.type == ftype
    assert f.is_repeated == repeated
    target = f.message_type or f.enum_type
    assert (target.full_name if target is not None else None) == type_name
    assert f.containing_oneof is None


def test_maps_are_maps() -> None:
    entry = _field("PodSandboxConfig", "labels").message_type
    assert entry.GetOptions().map_entry
    assert [(f.name, f.number, f.type) for f in entry.fields] == [
        ("key", 1, F.TYPE_STRING),
        ("value", 2, F.TYPE_STRING),
    ]


def test_enum_values() -> None:
    assert api_pb2.NamespaceMode.Value("TARGET") == 3
    assert api_pb2.ContainerState.Value("CONTAINER_UNKNOWN") == 3
    assert api_pb2.Signal.Value("SIGNAL_SIGTERM") == 23
    assert api_pb2.Signal.Value("SIGNAL_SIGRTMAX") == 65
    assert api_pb2.SecurityProfile.ProfileType.Value("Localhost") == 2
    assert api_pb2.CgroupDriver.Value("CGROUPFS") == 1
    assert api_pb2.ContainerEventType.Value("CONTAINER_DELETED_EVENT") == 3


def test_golden_encoding() -> None:
    # Bytes worked out by hand: tag = number << 3 | wire type.
    assert api_pb2.ContainerMetadata(name="a", attempt=2).SerializeToString() == b"\x0a\x01a\x10\x02"
    # Field 18, length-delimited: (18 << 3) | 2 = 146 = varint 0x92 0x01.
    assert api_pb2.ImageSpec(user_specified_image="x").SerializeToString() == b"\x92\x01\x01x"
    assert api_pb2.StopContainerRequest.FromString(b"\x0a\x02id\x10\x1e") == api_pb2.StopContainerRequest(
        container_id="id", timeout=30
    )


def test_round_trip_create_container() -> None:
    sandbox = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="web", uid="u-1", namespace="default", attempt=1),
        hostname="web",
        log_directory="/var/log/pods/default_web_u-1",
        dns_config=api_pb2.DNSConfig(
            servers=["10.0.0.10"], searches=["svc.cluster.local"], options=["ndots:5"]
        ),
        port_mappings=[api_pb2.PortMapping(protocol=api_pb2.UDP, container_port=53, host_port=5353)],
        labels={"app": "web"},
        linux=api_pb2.LinuxPodSandboxConfig(
            cgroup_parent="/kubepods/burstable",
            sysctls={"net.ipv4.ip_forward": "1"},
            security_context=api_pb2.LinuxSandboxSecurityContext(
                namespace_options=api_pb2.NamespaceOption(network=api_pb2.NODE, pid=api_pb2.CONTAINER),
                run_as_user=api_pb2.Int64Value(value=0),
            ),
        ),
    )
    request = api_pb2.CreateContainerRequest(
        pod_sandbox_id="sb1",
        sandbox_config=sandbox,
        config=api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="nginx", attempt=3),
            image=api_pb2.ImageSpec(image="docker.io/library/nginx:latest", user_specified_image="nginx"),
            command=["/bin/sh"],
            args=["-c", "sleep 1"],
            envs=[api_pb2.KeyValue(key="PATH", value=b"/bin\xff")],
            mounts=[
                api_pb2.Mount(
                    container_path="/data",
                    host_path="/srv/data",
                    propagation=api_pb2.PROPAGATION_BIDIRECTIONAL,
                    uidMappings=[api_pb2.IDMapping(host_id=100000, container_id=0, length=65536)],
                )
            ],
            annotations={"io.kubernetes.container.hash": "abc"},
            tty=True,
            stop_signal=api_pb2.SIGNAL_SIGQUIT,
            CDI_devices=[api_pb2.CDIDevice(name="vendor.com/gpu=0")],
            linux=api_pb2.LinuxContainerConfig(
                resources=api_pb2.LinuxContainerResources(
                    cpu_shares=512,
                    memory_limit_in_bytes=1 << 30,
                    oom_score_adj=-998,
                    hugepage_limits=[api_pb2.HugepageLimit(page_size="2MB", limit=1 << 21)],
                    unified={"memory.high": "max"},
                ),
                security_context=api_pb2.LinuxContainerSecurityContext(
                    capabilities=api_pb2.Capability(
                        add_capabilities=["NET_ADMIN"], drop_capabilities=["ALL"]
                    ),
                    seccomp=api_pb2.SecurityProfile(
                        profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref="profiles/a.json"
                    ),
                ),
            ),
        ),
    )
    data = request.SerializeToString(deterministic=True)
    decoded = api_pb2.CreateContainerRequest.FromString(data)
    assert decoded == request
    assert decoded.SerializeToString(deterministic=True) == data
    assert decoded.config.linux.resources.oom_score_adj == -998
    assert decoded.config.envs[0].value == b"/bin\xff"
    assert decoded.sandbox_config.linux.security_context.HasField("run_as_user")
    assert decoded.sandbox_config.linux.security_context.run_as_user.value == 0
    assert dict(decoded.sandbox_config.labels) == {"app": "web"}


def test_round_trip_streamed_events() -> None:
    event = api_pb2.ContainerEventResponse(
        container_id="c1",
        container_event_type=api_pb2.CONTAINER_STOPPED_EVENT,
        created_at=1_700_000_000_000_000_000,
        pod_sandbox_status=api_pb2.PodSandboxStatus(
            id="sb1",
            state=api_pb2.SANDBOX_NOTREADY,
            network=api_pb2.PodSandboxNetworkStatus(
                ip="10.1.0.5", additional_ips=[api_pb2.PodIP(ip="fd00::5")]
            ),
        ),
        containers_statuses=[
            api_pb2.ContainerStatus(
                id="c1", state=api_pb2.CONTAINER_EXITED, exit_code=137, reason="OOMKilled"
            )
        ],
    )
    assert api_pb2.ContainerEventResponse.FromString(event.SerializeToString()) == event
