"""Runtime names to shim binaries, and the ``start``/``delete`` commands (with fake shims)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from arun.api.containerd.runtime.bootstrap.v1 import bootstrap_pb2
from arun.api.containerd.runtime.task.v2 import shim_pb2 as task_v2
from arun.errdefs import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from arun.runtime import binary
from arun.runtime.binary import BootstrapResult, Resolver, ShimEnv, parse_start_output


def test_binary_name() -> None:
    assert binary.binary_name("io.containerd.runc.v2") == "containerd-shim-runc-v2"
    assert binary.binary_name("io.containerd.kata.v2") == "containerd-shim-kata-v2"
    assert binary.binary_name("runc.v1") == "containerd-shim-runc-v1"
    assert binary.binary_name("runc") == ""
    assert binary.binary_name(".runc.v1") == ""


def _exe(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = _exe(bindir / "containerd-shim-fake-v9")
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    r = Resolver()
    got = r.resolve("io.containerd.fake.v9")
    assert got.argv == (str(shim),) and not got.builtin and got.recorded == str(shim)
    # Cached per binary name.
    shim.unlink()
    assert r.resolve("other.fake.v9").argv == (str(shim),)
    # An absolute path is used as it is, and must exist.
    assert r.resolve(str(bindir)).argv == (str(bindir),)
    with pytest.raises(NotFoundError):
        r.resolve(str(tmp_path / "missing"))
    with pytest.raises(InvalidArgumentError):
        r.resolve("relative/containerd-shim-x-v1")
    with pytest.raises(InvalidArgumentError):
        r.resolve("runc")
    with pytest.raises(InvalidArgumentError):
        r.resolve("")
    with pytest.raises(NotFoundError, match="containerd-shim-nothere-v1"):
        r.resolve("io.containerd.nothere.v1")
    # Next to the daemon's executable (extra dirs stand in for it here).
    other = tmp_path / "daemon"
    other.mkdir()
    side = _exe(other / "containerd-shim-side-v1")
    assert Resolver([str(other)]).resolve("io.containerd.side.v1").argv == (str(side),)


def test_arun_runtime_is_this_daemons_shim() -> None:
    got = Resolver().resolve("io.containerd.arun.v1")
    assert got.builtin and got.argv == (sys.executable, "-m", "arun.shim")
    assert got.recorded == "io.containerd.arun.v1"
    assert Resolver().resolve(got.recorded).builtin


def test_parse_start_output() -> None:
    pb = bootstrap_pb2.BootstrapResult(version=3, address="unix:///run/x/s/abc", protocol="ttrpc")
    assert parse_start_output(pb.SerializeToString()) == BootstrapResult(3, "unix:///run/x/s/abc", "ttrpc")
    js = json.dumps({"version": 2, "address": "unix:///s/1", "protocol": "ttrpc"}).encode()
    assert parse_start_output(js + b"\n") == BootstrapResult(2, "unix:///s/1", "ttrpc")
    # containerd 1.x shims print the bare address.
    assert parse_start_output(b"unix:///run/containerd/s/abc\n") == BootstrapResult(
        2, "unix:///run/containerd/s/abc"
    )
    assert parse_start_output(b"\x00abstract").address == "\x00abstract"
    # JSON below version 2 is an address, as containerd reads it.
    assert parse_start_output(b'{"version": 1}').address == '{"version": 1}'
    with pytest.raises(UnimplementedError):
        parse_start_output(bootstrap_pb2.BootstrapResult(version=4, address="unix:///a").SerializeToString())
    with pytest.raises(UnimplementedError):
        parse_start_output(json.dumps({"version": 3, "address": "127.0.0.1:1", "protocol": "grpc"}).encode())
    with pytest.raises(FailedPreconditionError):
        parse_start_output(b"  \n")
    with pytest.raises(FailedPreconditionError):
        parse_start_output(b'{"version": 3}')


def test_bootstrap_json_round_trip() -> None:
    r = BootstrapResult(3, "unix:///a/b", "ttrpc")
    assert BootstrapResult.from_json(r.to_json()) == r
    assert json.loads(r.to_json()) == {"version": 3, "address": "unix:///a/b", "protocol": "ttrpc"}
    assert r.endpoint == "ttrpc+unix:///a/b"
    with pytest.raises(ValueError):
        BootstrapResult.from_json("{}")


ENV = ShimEnv(
    grpc_address="/run/a/arun.sock",
    ttrpc_address="/run/a/arun.sock.ttrpc",
    publish_binary="/usr/bin/arun",
    socket_dir="/run/a/s",
    version="9.9",
    extra_env={"SCHED_CORE": "1"},
)

# A fake shim: records argv, cwd, environment and stdin, then prints what $REPLY_FILE holds.
FAKE = f"""#!{sys.executable}
import json, os, sys
data = sys.stdin.buffer.read()
rec = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "stdin": data.hex(),
        "env": {{k: os.environ.get(k) for k in ("TTRPC_ADDRESS", "GRPC_ADDRESS", "NAMESPACE",
                                                 "MAX_SHIM_VERSION", "SCHED_CORE")}}}}
open(os.environ["RECORD_FILE"], "w").write(json.dumps(rec))
sys.stdout.buffer.write(open(os.environ["REPLY_FILE"], "rb").read())
sys.exit(int(os.environ.get("EXIT", "0")))
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[binary.ShimBinary, Path, Path]:
    shim = _exe(tmp_path / "containerd-shim-fake-v1", FAKE)
    monkeypatch.setenv("RECORD_FILE", str(tmp_path / "record.json"))
    monkeypatch.setenv("REPLY_FILE", str(tmp_path / "reply"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    return binary.ShimBinary("io.containerd.fake.v1", (str(shim),)), bundle, tmp_path


async def test_start_command_legacy(fake: tuple[binary.ShimBinary, Path, Path]) -> None:
    shim, bundle, tmp = fake
    (tmp / "reply").write_bytes(b"unix:///run/containerd/s/123\n")
    opts = any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"\x32\x04crun")
    got = await binary.start(shim, ENV, bundle, "ns1", "c1", opts)
    assert got == BootstrapResult(2, "unix:///run/containerd/s/123", "ttrpc")
    rec = json.loads((tmp / "record.json").read_text())
    assert rec["argv"] == [
        "-namespace", "ns1", "-address", "/run/a/arun.sock", "-publish-binary", "/usr/bin/arun",
        "-id", "c1", "start",
    ]  # fmt: skip
    assert rec["cwd"] == str(bundle)
    assert rec["env"] == {
        "TTRPC_ADDRESS": "/run/a/arun.sock.ttrpc",
        "GRPC_ADDRESS": "/run/a/arun.sock",
        "NAMESPACE": "ns1",
        "MAX_SHIM_VERSION": "2",
        "SCHED_CORE": "1",
    }
    # Not arun's shim: the options Any on stdin, as containerd 1.x sends it.
    assert any_pb2.Any.FromString(bytes.fromhex(rec["stdin"])) == opts


async def test_start_command_bootstrap_for_arun(fake: tuple[binary.ShimBinary, Path, Path]) -> None:
    shim, bundle, tmp = fake
    arun_like = binary.ShimBinary("io.containerd.arun.v1", shim.argv, builtin=True)
    reply = bootstrap_pb2.BootstrapResult(version=3, address="unix:///run/a/s/x", protocol="ttrpc")
    (tmp / "reply").write_bytes(reply.SerializeToString())
    opts = any_pb2.Any(type_url="containerd.runc.v1.Options", value=b"")
    got = await binary.start(arun_like, ENV, bundle, "ns1", "c1", opts)
    assert got.version == 3
    params = bootstrap_pb2.BootstrapParams.FromString(
        bytes.fromhex(json.loads((tmp / "record.json").read_text())["stdin"])
    )
    assert (params.instance_id, params.namespace, params.socket_dir) == ("c1", "ns1", "/run/a/s")
    assert params.containerd_ttrpc_address == "/run/a/arun.sock.ttrpc"
    assert params.containerd_version == "9.9"
    assert params.extensions[0].value.type_url == "containerd.runc.v1.Options"


async def test_start_command_failures(
    fake: tuple[binary.ShimBinary, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    shim, bundle, tmp = fake
    (tmp / "reply").write_bytes(b"some error text")
    monkeypatch.setenv("EXIT", "1")
    with pytest.raises(FailedPreconditionError, match="some error text"):
        await binary.start(shim, ENV, bundle, "ns1", "c1", None)
    hang = _exe(tmp / "hang", "#!/bin/sh\nsleep 30\n")
    with pytest.raises(DeadlineExceededError):
        await binary.start(binary.ShimBinary("x", (str(hang),)), ENV, bundle, "ns1", "c1", None, timeout=0.3)
    with pytest.raises(NotFoundError):
        await binary.start(binary.ShimBinary("x", (str(tmp / "none"),)), ENV, bundle, "ns1", "c1", None)


async def test_delete_command(
    fake: tuple[binary.ShimBinary, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    shim, bundle, tmp = fake
    resp = task_v2.DeleteResponse(pid=42, exit_status=137)
    resp.exited_at.FromSeconds(1_700_000_000)
    (tmp / "reply").write_bytes(resp.SerializeToString())
    exit = await binary.delete(shim, ENV, bundle, "ns1", "c1")
    assert (exit.pid, exit.status) == (42, 137)
    assert exit.timestamp is not None and int(exit.timestamp.timestamp()) == 1_700_000_000
    rec = json.loads((tmp / "record.json").read_text())
    assert rec["argv"][-3:] == ["-bundle", str(bundle), "delete"]
    assert rec["cwd"] == str(bundle) and rec["stdin"] == ""
    monkeypatch.setenv("EXIT", "2")
    with pytest.raises(FailedPreconditionError):
        await binary.delete(shim, ENV, bundle, "ns1", "c1")


def test_shim_env_puts_this_arun_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    path = ENV.environment("x")["PYTHONPATH"].split(os.pathsep)
    import arun

    assert path[0] == str(Path(arun.__file__).resolve().parent.parent)
    assert path[1] == "/somewhere"
