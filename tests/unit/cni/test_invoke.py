from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from arun.cni import errors
from arun.cni.invoke import Args, PluginExecutor, decode_result, find_plugin, version_info
from arun.errdefs import (
    ArunError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from arun.errdefs.grpc import code_of

from .fakes import FakePlugins


def test_find_plugin_searches_dirs_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "bridge").write_text("#!/bin/sh\n")
    (b / "bridge").chmod(0o755)
    assert find_plugin("bridge", [str(a), str(b)]) == str(b / "bridge")
    (a / "bridge").write_text("#!/bin/sh\n")
    (a / "bridge").chmod(0o755)
    assert find_plugin("bridge", [str(a), str(b)]) == str(a / "bridge")
    (a / "bridge").chmod(0o644)  # not executable: skipped
    assert find_plugin("bridge", [str(a), str(b)]) == str(b / "bridge")


def test_find_plugin_missing_is_a_clear_failed_precondition(tmp_path: Path) -> None:
    with pytest.raises(errors.PluginNotFoundError) as ei:
        find_plugin("nosuch", [str(tmp_path)])
    assert isinstance(ei.value, FailedPreconditionError)
    assert "failed to find plugin 'nosuch'" in ei.value.message
    assert str(tmp_path) in ei.value.message
    with pytest.raises(errors.PluginNotFoundError, match="invalid plugin name"):
        find_plugin("../bridge", [str(tmp_path)])
    with pytest.raises(errors.PluginNotFoundError):
        find_plugin("bridge", [])


def test_args_environ() -> None:
    env = Args(
        command="ADD",
        container_id="c1",
        netns="/run/netns/x",
        ifname="eth0",
        plugin_args=(("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")),
        path=("/opt/cni/bin", "/usr/lib/cni"),
    ).environ({"PATH": "/bin", "CNI_COMMAND": "stale"})
    assert env == {
        "PATH": "/bin",
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    }


async def test_exec_passes_stdin_and_env(fake_plugins: FakePlugins) -> None:
    path = fake_plugins.add("fake")
    out = await PluginExecutor().exec_plugin(
        str(path), b'{"cniVersion": "1.0.0", "name": "n"}', Args("ADD", "c1", "/ns", "eth0"), "w"
    )
    _, result = decode_result(out, "1.0.0", "w")
    assert [str(i.ip) for i in result.ips] == ["10.99.0.2"]
    [call] = fake_plugins.calls()
    assert call["stdin"] == {"cniVersion": "1.0.0", "name": "n"}
    assert call["env"]["CNI_COMMAND"] == "ADD"
    assert call["env"]["CNI_CONTAINERID"] == "c1"
    assert call["env"]["CNI_IFNAME"] == "eth0"
    assert call["env"]["CNI_NETNS"] == "/ns"


@pytest.mark.parametrize(
    ("code", "cls", "base"),
    [
        (1, errors.PluginFailedPreconditionError, FailedPreconditionError),
        (3, errors.PluginUnknownContainerError, NotFoundError),
        (7, errors.PluginInvalidArgumentError, InvalidArgumentError),
        (11, errors.PluginUnavailableError, UnavailableError),
        (50, errors.PluginUnavailableError, UnavailableError),
        (999, errors.PluginInternalError, InternalError),
        (123, errors.PluginError, ArunError),
    ],
)
async def test_error_document_becomes_errdefs(
    fake_plugins: FakePlugins, code: int, cls: type[Exception], base: type[Exception]
) -> None:
    path = fake_plugins.add(
        "fake", ADD={"error": {"cniVersion": "1.0.0", "code": code, "msg": "boom", "details": "more"}}
    )
    with pytest.raises(cls) as ei:
        await PluginExecutor().exec_plugin(str(path), b"{}", Args("ADD"), "plugin type='fake' failed (add)")
    err = ei.value
    assert isinstance(err, errors.PluginError)
    assert isinstance(err, base)
    assert err.message == "plugin type='fake' failed (add): boom; more"
    assert (err.cni_code, err.cni_msg, err.details, err.plugin, err.command) == (
        code,
        "boom",
        "more",
        "fake",
        "ADD",
    )
    expected = {1: 9, 3: 5, 7: 3, 11: 14, 50: 14, 999: 13, 123: 2}[code]
    assert code_of(err) == expected


async def test_failure_without_stdout_uses_stderr(fake_plugins: FakePlugins) -> None:
    path = fake_plugins.add("fake", DEL={"stderr": "it broke", "exit": 2})
    with pytest.raises(errors.PluginError) as ei:
        await PluginExecutor().exec_plugin(str(path), b"{}", Args("DEL"), "w")
    assert "it broke" in ei.value.message
    assert ei.value.stderr == "it broke"
    path = fake_plugins.add("quiet", DEL={"exit": 3})
    with pytest.raises(errors.PluginError, match="no error message"):
        await PluginExecutor().exec_plugin(str(path), b"{}", Args("DEL"), "w")


async def test_unparseable_error_output(fake_plugins: FakePlugins) -> None:
    path = fake_plugins.add("fake", ADD={"raw_stdout": "panic: oops", "exit": 1})
    with pytest.raises(errors.PluginError, match="could not be parsed: 'panic: oops'"):
        await PluginExecutor().exec_plugin(str(path), b"{}", Args("ADD"), "w")


async def test_garbage_result_is_invalid_result(fake_plugins: FakePlugins) -> None:
    path = fake_plugins.add("fake", ADD={"raw_stdout": "not json"})
    out = await PluginExecutor().exec_plugin(str(path), b"{}", Args("ADD"), "w")
    with pytest.raises(errors.InvalidResultError, match="cannot decode"):
        decode_result(out, "1.0.0", "w")
    raw, result = decode_result(b'{"ips": [{"address": "10.0.0.5/8"}]}', "0.4.0", "w")
    assert raw["cniVersion"] == "0.4.0"  # libcni's fixupResultVersion
    assert result.cni_version == "0.4.0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_timeout_kills_the_plugin(fake_plugins: FakePlugins) -> None:
    path = fake_plugins.add("slow", ADD={"sleep": 30})
    with pytest.raises(DeadlineExceededError, match=r"timed out after 0\.5s"):
        await PluginExecutor(timeout=0.5).exec_plugin(str(path), b"{}", Args("ADD"), "w")
    [call] = fake_plugins.calls()
    assert not _alive(call["pid"])


async def test_cancellation_kills_the_plugin(fake_plugins: FakePlugins) -> None:
    path = fake_plugins.add("slow", ADD={"sleep": 30})
    task = asyncio.create_task(PluginExecutor().exec_plugin(str(path), b"{}", Args("ADD"), "w"))
    for _ in range(200):
        if fake_plugins.calls():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [call] = fake_plugins.calls()
    assert not _alive(call["pid"])


async def test_version_info(fake_plugins: FakePlugins) -> None:
    path = fake_plugins.add("fake")
    fake_plugins.behave("fake", versions=["0.4.0", "1.0.0"])
    assert await version_info(PluginExecutor(), str(path)) == ["0.4.0", "1.0.0"]
    [call] = fake_plugins.calls()
    assert call["env"]["CNI_COMMAND"] == "VERSION"
    assert json.loads(json.dumps(call["stdin"])) == {"cniVersion": "1.1.0"}
    old = fake_plugins.add("old", VERSION={"error": {"code": 4, "msg": "unknown CNI_COMMAND: VERSION"}})
    assert await version_info(PluginExecutor(), str(old)) == ["0.1.0"]
