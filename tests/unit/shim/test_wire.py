"""The hand-written codec of the shim's one-shot commands agrees with the generated classes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arun.api.containerd.runtime.bootstrap.v1 import bootstrap_pb2
from arun.api.containerd.runtime.task.v2 import shim_pb2
from arun.api.containerd.types.runc.options import oci_pb2
from arun.shim import wire

text = st.text(max_size=40)


@given(
    instance_id=text,
    namespace=st.text(min_size=1, max_size=20),
    log_level=st.sampled_from([0, -8, -4, 4, 8, 10, 12]),
    ttrpc=text,
    grpc=text,
    socket_dir=st.none() | text,
    root=text,
)
def test_bootstrap_params_decode_like_generated(
    instance_id: str, namespace: str, log_level: int, ttrpc: str, grpc: str, socket_dir: str | None, root: str
) -> None:
    msg = bootstrap_pb2.BootstrapParams(
        instance_id=instance_id,
        namespace=namespace,
        log_level=log_level,
        containerd_version="v2.3.4",
        containerd_ttrpc_address=ttrpc,
        containerd_grpc_address=grpc,
        containerd_binary="/usr/bin/containerd",
    )
    if socket_dir is not None:
        msg.socket_dir = socket_dir
    ext = msg.extensions.add()
    ext.value.type_url = "containerd.runc.v1.Options"
    ext.value.value = oci_pb2.Options(root=root, binary_name="crun", systemd_cgroup=True).SerializeToString()
    data = msg.SerializeToString()
    got = wire.looks_like_bootstrap(data)
    assert got is not None
    assert (got.instance_id, got.namespace, got.log_level) == (instance_id, namespace, log_level)
    assert (got.containerd_ttrpc_address, got.containerd_grpc_address) == (ttrpc, grpc)
    assert got.socket_dir == socket_dir
    opts = wire.RuncOptions.from_any(got.extensions[0])
    assert opts == wire.RuncOptions("crun", root, True)
    # and our encoder round-trips through the generated class
    again = bootstrap_pb2.BootstrapParams.FromString(got.encode())
    assert again == msg


def test_options_any_is_not_bootstrap() -> None:
    any_ = wire.AnyMessage("containerd.runc.v1.Options", oci_pb2.Options(root="/r").SerializeToString())
    assert wire.looks_like_bootstrap(any_.encode()) is None
    assert wire.looks_like_bootstrap(b"") is None
    assert wire.looks_like_bootstrap(b"\xff\xff garbage") is None


@given(address=text, version=st.integers(0, 3))
def test_bootstrap_result_encodes_like_generated(address: str, version: int) -> None:
    msg = bootstrap_pb2.BootstrapResult.FromString(wire.bootstrap_result(address, version))
    assert (msg.version, msg.address, msg.protocol) == (version, address, "ttrpc")


@given(pid=st.integers(0, 2**32 - 1), status=st.integers(0, 255), ns=st.integers(0, 2**62))
def test_delete_response_encodes_like_generated(pid: int, status: int, ns: int) -> None:
    msg = shim_pb2.DeleteResponse.FromString(wire.delete_response(pid, status, ns))
    assert (msg.pid, msg.exit_status) == (pid, status)
    assert msg.exited_at.seconds * 10**9 + msg.exited_at.nanos == ns


def test_truncated_input_is_refused() -> None:
    msg = bootstrap_pb2.BootstrapParams(namespace="default", containerd_grpc_address="/x")
    data = msg.SerializeToString()
    with pytest.raises(ValueError):
        wire.decode(data[:-1])
