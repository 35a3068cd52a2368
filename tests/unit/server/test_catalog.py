from __future__ import annotations

from grpclib.const import Cardinality

from arun.server import catalog

CONTAINERD_SERVICES = {
    f"containerd.services.{s}"
    for s in [
        "containers.v1.Containers",
        "content.v1.Content",
        "diff.v1.Diff",
        "events.v1.Events",
        "images.v1.Images",
        "introspection.v1.Introspection",
        "leases.v1.Leases",
        "namespaces.v1.Namespaces",
        "snapshots.v1.Snapshots",
        "tasks.v1.Tasks",
        "version.v1.Version",
        "sandbox.v1.Store",
        "sandbox.v1.Controller",
        "streaming.v1.Streaming",
        "transfer.v1.Transfer",
    ]
}


def test_every_grpc_service_of_the_protos_is_known() -> None:
    names = {s.name for s in catalog.grpc_services()}
    assert CONTAINERD_SERVICES <= names
    assert {"runtime.v1.RuntimeService", "runtime.v1.ImageService"} <= names
    # ttrpc-only services are not served on the gRPC socket.
    assert not any("ttrpc" in n for n in names)
    assert not any(n.startswith("containerd.task.") for n in names)


def test_methods_and_cardinality() -> None:
    by_name = {s.name: s for s in catalog.grpc_services()}
    cri = {m.name: m for m in by_name["runtime.v1.RuntimeService"].methods}
    assert cri["Version"].path == "/runtime.v1.RuntimeService/Version"
    assert cri["Version"].cardinality is Cardinality.UNARY_UNARY
    assert cri["GetContainerEvents"].cardinality is Cardinality.UNARY_STREAM
    content = {m.name: m for m in by_name["containerd.services.content.v1.Content"].methods}
    assert content["Write"].cardinality is Cardinality.STREAM_STREAM
    assert content["Read"].cardinality is Cardinality.UNARY_STREAM
    assert cri["Version"].request_type.DESCRIPTOR.full_name == "runtime.v1.VersionRequest"


def test_fallbacks_cover_every_method() -> None:
    services = catalog.grpc_services()
    handlers = catalog.fallback_handlers(services)
    assert len(handlers) == sum(len(s.methods) for s in services)
