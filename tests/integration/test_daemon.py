"""The daemon as real clients see it: Debian's ctr, grpclib clients, raw HTTP/2."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1 import health_grpc, health_pb2

from arun.api.containerd.services.introspection.v1 import introspection_grpc, introspection_pb2
from arun.api.containerd.services.namespaces.v1 import namespace_grpc, namespace_pb2
from arun.api.cri.runtime.v1 import api_grpc, api_pb2
from arun.errdefs import UnimplementedError
from arun.testing import rawgrpc
from arun.testing.daemon import Daemon, run_daemon
from arun.version import VERSION

pytestmark = [pytest.mark.integration]

HERE = Path(__file__).parent


def table(output: str) -> list[list[str]]:
    """Rows of a ctr table (header dropped); no cell of the tables read here contains a space."""
    lines = [line for line in output.splitlines() if line.strip()]
    return [line.split() for line in lines[1:]]


# -- ctr --------------------------------------------------------------------------------------


@pytest.mark.ctr
def test_ctr_version_and_stable_uuid(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    out = d.ctr("version").stdout
    server = out.split("Server:", 1)[1]
    assert re.search(rf"Version:\s+{re.escape(VERSION)}\n", server)
    uuid = re.search(r"UUID:\s+([0-9a-f-]{36})", server)
    assert uuid is not None
    base = d.base
    assert d.stop(keep=True) == 0
    # Same root, new process: the same server uuid.
    again = daemon_factory(base=base)
    assert uuid.group(1) in again.ctr("version").stdout


@pytest.mark.ctr
def test_ctr_plugins_ls_shows_ok_skip_and_error(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(imports=["plugins_for_test"], pythonpath=[HERE])
    rows = {(r[0], r[1]): r[-1] for r in table(d.ctr("plugins", "ls").stdout)}
    for uri in [
        ("io.containerd.metadata.v1", "sqlite"),
        ("io.containerd.service.v1", "namespaces-service"),
        ("io.containerd.service.v1", "introspection-service"),
        ("io.containerd.grpc.v1", "namespaces"),
        ("io.containerd.grpc.v1", "introspection"),
        ("io.containerd.grpc.v1", "version"),
        ("io.containerd.grpc.v1", "healthcheck"),
        ("io.containerd.grpc.v1", "cri"),
    ]:
        assert rows[uri] == "ok", (uri, rows)
    assert rows[("io.arun.test.v1", "skipper")] == "skip"
    assert rows[("io.arun.test.v1", "broken")] == "error"
    # Filters: containerd's syntax, several filters are ORed.
    filtered = table(d.ctr("plugins", "ls", "type==io.arun.test.v1").stdout)
    assert sorted(r[1] for r in filtered) == ["broken", "skipper"]
    filtered = table(d.ctr("plugins", "ls", "id==version", "id~=^intro").stdout)
    assert sorted(r[1] for r in filtered) == ["introspection", "introspection-service", "version"]
    bad = d.ctr("plugins", "ls", "id==", check=False)
    assert bad.returncode != 0
    assert "parse error" in bad.stderr


@pytest.mark.ctr
def test_ctr_namespaces_create_label_ls_rm(daemon: Daemon) -> None:
    daemon.ctr("namespaces", "create", "team-a", "owner=alice", "tier=web")
    daemon.ctr("namespaces", "create", "team-b")
    daemon.ctr("namespaces", "label", "team-a", "tier=db", "new=1")
    daemon.ctr("namespaces", "label", "team-a", "owner=")  # empty value: removes the label
    rows = {r[0]: (r[1] if len(r) > 1 else "") for r in table(daemon.ctr("namespaces", "ls").stdout)}
    assert rows["team-b"] == ""
    assert sorted(rows["team-a"].split(",")) == ["new=1", "tier=db"]
    quiet = daemon.ctr("namespaces", "ls", "-q").stdout.split()
    assert {"team-a", "team-b"} <= set(quiet)
    assert daemon.ctr("namespaces", "rm", "team-a", "team-b").stdout.split() == ["team-a", "team-b"]
    assert "team-a" not in daemon.ctr("namespaces", "ls", "-q").stdout.split()


@pytest.mark.ctr
def test_ctr_invalid_namespace_name_is_invalid_argument(daemon: Daemon) -> None:
    r = daemon.ctr("namespaces", "create", "bad..name", check=False)
    assert r.returncode != 0
    assert "invalid argument" in r.stderr
    assert "bad..name" not in daemon.ctr("namespaces", "ls", "-q").stdout


@pytest.mark.ctr
def test_ctr_unimplemented_service_reads_as_not_implemented(daemon_factory: Callable[..., Daemon]) -> None:
    # ctr maps codes.Unimplemented to errdefs.ErrNotImplemented ("not implemented"), which it
    # can only do when the status arrives as a proper gRPC response.
    # (The tasks service, its plugin disabled, stands in for any service no plugin serves.)
    daemon = daemon_factory(config_text='version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.tasks"]\n')
    r = daemon.ctr("tasks", "ls", check=False)
    assert r.returncode != 0
    assert "not implemented" in r.stderr
    assert "content-type" not in r.stderr


def _insert_container(db: Path, namespace: str, cid: str) -> None:
    conn = sqlite3.connect(db, timeout=10)
    try:
        now = time.time_ns()
        with conn:
            conn.execute(
                "INSERT INTO containers (namespace, id, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (namespace, cid, now, now),
            )
    finally:
        conn.close()


def _delete_container(db: Path, namespace: str, cid: str) -> None:
    conn = sqlite3.connect(db, timeout=10)
    try:
        with conn:
            conn.execute("DELETE FROM containers WHERE namespace = ? AND id = ?", (namespace, cid))
    finally:
        conn.close()


@pytest.mark.ctr
def test_deleting_a_namespace_that_holds_containers_is_refused(daemon: Daemon) -> None:
    daemon.ctr("namespaces", "create", "busy")
    db = daemon.root / "io.containerd.metadata.v1.sqlite" / "meta.db"
    _insert_container(db, "busy", "c1")
    r = daemon.ctr("namespaces", "rm", "busy", check=False)
    assert r.returncode != 0
    assert "failed precondition" in r.stderr
    assert "containers" in r.stderr
    assert "busy" in daemon.ctr("namespaces", "ls", "-q").stdout.split()
    _delete_container(db, "busy", "c1")
    daemon.ctr("namespaces", "rm", "busy")


# -- grpclib clients --------------------------------------------------------------------------


async def test_namespace_errors_carry_their_codes(daemon: Daemon) -> None:
    async with daemon.channel() as ch:
        stub = namespace_grpc.NamespacesStub(ch)
        with pytest.raises(GRPCError) as ei:
            await stub.Create(
                namespace_pb2.CreateNamespaceRequest(namespace=namespace_pb2.Namespace(name="-x"))
            )
        assert ei.value.status is Status.INVALID_ARGUMENT
        await stub.Create(
            namespace_pb2.CreateNamespaceRequest(namespace=namespace_pb2.Namespace(name="full"))
        )
        with pytest.raises(GRPCError) as ei:
            await stub.Create(
                namespace_pb2.CreateNamespaceRequest(namespace=namespace_pb2.Namespace(name="full"))
            )
        assert ei.value.status is Status.ALREADY_EXISTS
        with pytest.raises(GRPCError) as ei:
            await stub.Get(namespace_pb2.GetNamespaceRequest(name="nope"))
        assert ei.value.status is Status.NOT_FOUND
        db = daemon.root / "io.containerd.metadata.v1.sqlite" / "meta.db"
        await asyncio.to_thread(_insert_container, db, "full", "c1")
        with pytest.raises(GRPCError) as ei:
            await stub.Delete(namespace_pb2.DeleteNamespaceRequest(name="full"))
        assert ei.value.status is Status.FAILED_PRECONDITION
        got = await stub.Get(namespace_pb2.GetNamespaceRequest(name="full"))
        assert got.namespace.name == "full"


async def test_cri_version_and_unimplemented(daemon: Daemon) -> None:
    async with daemon.channel() as ch:
        runtime = api_grpc.RuntimeServiceStub(ch)
        v = await runtime.Version(api_pb2.VersionRequest(version="v1"))
        assert (v.runtime_name, v.runtime_version, v.runtime_api_version) == ("arun", VERSION, "v1")
        assert v.version == "0.1.0"
        # Pod checkpoint/restore are the CRI methods arun answers UNIMPLEMENTED on purpose.
        with pytest.raises(GRPCError) as ei:
            await runtime.CheckpointPod(api_pb2.CheckpointPodRequest())
        assert ei.value.status is Status.UNIMPLEMENTED
        with pytest.raises(GRPCError) as ei:
            await runtime.RestorePod(api_pb2.RestorePodRequest())
        assert ei.value.status is Status.UNIMPLEMENTED


@pytest.mark.parametrize(
    "method",
    [
        "/runtime.v1.RuntimeService/CheckpointPod",
        "/runtime.v1.RuntimeService/RestorePod",
        "/containerd.services.sandbox.v1.Store/Create",
        "/containerd.services.mounts.v1.Mounts/List",  # server-streaming
        "/runtime.v1.NoSuchService/Nope",
    ],
)
async def test_unimplemented_on_the_wire_has_a_content_type(daemon: Daemon, method: str) -> None:
    resp = await asyncio.to_thread(rawgrpc.call, str(daemon.address), method)
    assert resp.headers, "no response headers"
    assert resp.headers[0].get(":status") == "200"
    assert resp.content_type is not None and resp.content_type.startswith("application/grpc")
    assert resp.grpc_status == Status.UNIMPLEMENTED.value


async def test_health_and_introspection_server(daemon: Daemon) -> None:
    async with daemon.channel() as ch:
        health = health_grpc.HealthStub(ch)
        h = await health.Check(health_pb2.HealthCheckRequest())
        assert h.status == health_pb2.HealthCheckResponse.SERVING
        intro = introspection_grpc.IntrospectionStub(ch)
        s = await intro.Server(empty_pb2.Empty())
        assert s.pid == daemon.proc.pid
        assert s.pidns > 0
        info = await intro.PluginInfo(
            introspection_pb2.PluginInfoRequest(type="io.containerd.grpc.v1", id="cri")
        )
        assert info.plugin.id == "cri"
        with pytest.raises(GRPCError) as ei:
            await intro.PluginInfo(introspection_pb2.PluginInfoRequest(type="io.x", id="nope"))
        assert ei.value.status is Status.NOT_FOUND


# -- lifecycle --------------------------------------------------------------------------------


async def test_ttrpc_socket_answers(daemon: Daemon) -> None:
    ttrpc_path = Path(f"{daemon.address}.ttrpc")
    assert ttrpc_path.is_socket()
    from arun.errdefs import grpc as egrpc
    from arun.testing.ttrpc import EchoRequest, echo_descriptor
    from arun.ttrpc import Client, ServiceStub

    async with await Client.connect(str(ttrpc_path), from_status=egrpc.from_code) as client:
        with pytest.raises(UnimplementedError):
            await ServiceStub(client, echo_descriptor).Unary(EchoRequest(text="x"))


def test_sigterm_exits_cleanly_and_removes_the_sockets(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    address = d.address
    assert d.stop(keep=True) == 0
    try:
        assert not address.exists()
        assert not Path(f"{address}.ttrpc").exists()
        assert "arun stopped" in d.logs()
    finally:
        d.cleanup()


async def test_second_daemon_on_a_live_socket_is_refused(daemon: Daemon) -> None:
    r = await asyncio.to_thread(run_daemon, address=daemon.address)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"arun: another daemon is serving on {str(daemon.address)!r}"]
    # The first daemon still serves.
    assert (await _version(daemon)).version == VERSION


def test_stale_socket_is_replaced(daemon_factory: Callable[..., Daemon]) -> None:
    base = Path(tempfile.mkdtemp(prefix="arun-", dir="/tmp"))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(base / "arun.sock"))
    stale.close()  # the file stays, nobody listens
    d = daemon_factory(base=base)
    assert d.address.is_socket()


@pytest.mark.parametrize(
    ("config_text", "fragment"),
    [
        ("version = 2\n[grpc\n", "invalid TOML"),
        ("version = 2\nno_such_key = 1\n", "unknown key 'no_such_key'"),
        ("version = 1\n", "unsupported config version"),
        ('version = 2\n[debug]\nlevel = "loud"\n', "unknown log level 'loud'"),
        ('version = 2\n[plugins."io.containerd.grpc.v1.version"]\nx = 1\n', "takes no configuration"),
        ("version = 2\n[grpc]\nuid = 'zero'\n", "expected an integer"),
    ],
)
def test_broken_config_exits_with_one_line(config_text: str, fragment: str) -> None:
    r = run_daemon(config_text=config_text)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("arun: ")
    assert fragment in lines[0]


def test_explicit_missing_config_is_an_error() -> None:
    r = run_daemon(config="/nonexistent/arun.toml")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["arun: config file '/nonexistent/arun.toml' does not exist"]


def test_log_level_flag_and_json_format(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory(
        config_text='version = 2\n[debug]\nformat = "json"\n', extra_args=["--log-level", "debug"]
    )
    asyncio.run(_version(d))
    asyncio.run(_list_namespaces(d, "team-log"))
    records = [json.loads(line) for line in d.logs().splitlines() if line.startswith("{")]
    done = [r for r in records if r["msg"] == "request done"]
    assert done and done[0]["method"] == "/containerd.services.version.v1.Version/Version"
    assert all("request_id" in r for r in done)
    # Both lines of a request carry its method and the namespace of its containerd-namespace header.
    listed = [r for r in records if r.get("method") == "/containerd.services.namespaces.v1.Namespaces/List"]
    assert [r["msg"] for r in listed] == ["request started", "request done"]
    assert {r["namespace"] for r in listed} == {"team-log"}
    assert listed[0]["request_id"] == listed[1]["request_id"]


async def _version(d: Daemon) -> Any:
    from arun.api.containerd.services.version.v1 import version_grpc

    async with d.channel() as ch:
        return await version_grpc.VersionStub(ch).Version(empty_pb2.Empty())


async def _list_namespaces(d: Daemon, namespace: str) -> Any:
    async with d.channel() as ch:
        stub = namespace_grpc.NamespacesStub(ch)
        return await stub.List(
            namespace_pb2.ListNamespacesRequest(), metadata={"containerd-namespace": namespace}
        )


@pytest.mark.parametrize(
    "config_text",
    [
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\nconf_dir = "{conf_dir}"\n',
        'version = 3\n[plugins."io.containerd.cri.v1.runtime".cni]\nconf_dir = "{conf_dir}"\n',
    ],
    ids=["v2", "v3"],
)
def test_config_versions_2_and_3_reach_the_plugin(
    daemon_factory: Callable[..., Daemon], config_text: str, tmp_path: Path
) -> None:
    conf_dir = tmp_path / "net.d"
    d = daemon_factory(config_text=config_text.format(conf_dir=conf_dir))

    async def status() -> Any:
        async with d.channel() as ch:
            return await api_grpc.RuntimeServiceStub(ch).Status(api_pb2.StatusRequest(verbose=True))

    info = json.loads(asyncio.run(status()).info["config"])
    assert info["cni"]["conf_dir"] == str(conf_dir)
