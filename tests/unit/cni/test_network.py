from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from arun.cni.conf import conflist_from_bytes
from arun.cni.errors import PluginInvalidArgumentError, PluginNotFoundError, PluginUnavailableError
from arun.cni.network import CNI, RuntimeConf
from arun.errdefs import InvalidArgumentError, NotFoundError, UnimplementedError

from .fakes import FakePlugins


def netlist(version: str = "1.0.0", plugins: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
    doc = {
        "cniVersion": version,
        "name": "testnet",
        "plugins": plugins
        if plugins is not None
        else [
            {"type": "main", "opt": 1},
            {"type": "meta", "capabilities": {"portMappings": True, "bandwidth": False}},
        ],
    } | extra
    return conflist_from_bytes(json.dumps(doc).encode())


RT = RuntimeConf(
    container_id="sb1",
    netns="/run/netns/sb1",
    ifname="eth0",
    args=(("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")),
    capability_args={
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {},
    },
)


@pytest.fixture
def cni(fake_plugins: FakePlugins, tmp_path: Path) -> CNI:
    fake_plugins.add("main")
    fake_plugins.add("meta")
    return CNI([str(tmp_path / "empty"), str(fake_plugins.bin_dir)], str(tmp_path / "cache"))


async def test_add_chains_prev_result_and_injects(
    cni: CNI, fake_plugins: FakePlugins, tmp_path: Path
) -> None:
    result = await cni.add_network_list(netlist(), RT)
    assert [str(ip.ip) for ip in result.ips] == ["10.99.0.2"]
    main, meta = fake_plugins.calls()
    assert main["plugin"] == "main" and meta["plugin"] == "meta"
    # name and cniVersion injected, own keys kept, no runtimeConfig without capabilities
    assert main["stdin"] == {"type": "main", "opt": 1, "name": "testnet", "cniVersion": "1.0.0"}
    # the second plugin gets the first one's result and only the capabilities it declares
    assert meta["stdin"]["prevResult"]["ips"][0]["address"] == "10.99.0.2/24"
    assert meta["stdin"]["runtimeConfig"] == {"portMappings": RT.capability_args["portMappings"]}
    env = meta["env"]
    assert env["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=p"
    assert env["CNI_PATH"] == f"{tmp_path / 'empty'}:{fake_plugins.bin_dir}"
    # cached as libcni does
    cache = tmp_path / "cache" / "results" / "testnet-sb1-eth0"
    doc = json.loads(cache.read_text())
    assert doc["kind"] == "cniCacheV1"
    assert doc["containerId"] == "sb1"
    assert doc["ifName"] == "eth0"
    assert doc["networkName"] == "testnet"
    assert doc["netns"] == "/run/netns/sb1"
    assert doc["cniArgs"] == [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]]
    assert json.loads(base64.b64decode(doc["config"]))["name"] == "testnet"
    assert doc["result"]["ips"][0]["address"] == "10.99.0.2/24"
    assert cni.cached_result(netlist(), RT) == result


async def test_del_reverse_order_with_cached_prev_result(
    cni: CNI, fake_plugins: FakePlugins, tmp_path: Path
) -> None:
    await cni.add_network_list(netlist(), RT)
    fake_plugins.clear()
    await cni.del_network_list(netlist(), RT)
    meta, main = fake_plugins.calls()
    assert (meta["plugin"], main["plugin"]) == ("meta", "main")
    assert meta["env"]["CNI_COMMAND"] == "DEL"
    assert main["stdin"]["prevResult"]["ips"][0]["address"] == "10.99.0.2/24"
    assert not (tmp_path / "cache" / "results" / "testnet-sb1-eth0").exists()
    # again: idempotent, no prevResult any more
    fake_plugins.clear()
    await cni.del_network_list(netlist(), RT)
    assert all("prevResult" not in c["stdin"] for c in fake_plugins.calls())


async def test_del_continues_past_a_failing_plugin(
    cni: CNI, fake_plugins: FakePlugins, tmp_path: Path
) -> None:
    await cni.add_network_list(netlist(), RT)
    fake_plugins.clear()
    fake_plugins.behave("meta", DEL={"error": {"code": 11, "msg": "busy"}})
    with pytest.raises(PluginUnavailableError, match="busy"):
        await cni.del_network_list(netlist(), RT)
    assert fake_plugins.commands() == [("meta", "DEL"), ("main", "DEL")]
    # kept for the retry, which gets the prevResult again
    assert (tmp_path / "cache" / "results" / "testnet-sb1-eth0").exists()
    fake_plugins.behave("meta")
    fake_plugins.clear()
    await cni.del_network_list(netlist(), RT)
    assert all(c["stdin"]["prevResult"]["ips"] for c in fake_plugins.calls())
    assert not (tmp_path / "cache" / "results" / "testnet-sb1-eth0").exists()


async def test_del_before_040_has_no_prev_result(cni: CNI, fake_plugins: FakePlugins) -> None:
    nl = netlist(version="0.3.1")
    await cni.add_network_list(nl, RT)
    fake_plugins.clear()
    await cni.del_network_list(nl, RT)
    assert all("prevResult" not in c["stdin"] for c in fake_plugins.calls())


async def test_cached_prev_result_converted_to_config_version(cni: CNI, fake_plugins: FakePlugins) -> None:
    await cni.add_network_list(netlist(version="1.0.0"), RT)
    fake_plugins.clear()
    await cni.del_network_list(netlist(version="0.4.0"), RT)
    call = fake_plugins.calls()[0]
    assert call["stdin"]["prevResult"]["cniVersion"] == "0.4.0"
    assert call["stdin"]["prevResult"]["ips"][0]["version"] == "4"


async def test_add_failure_on_second_plugin_writes_no_cache(
    cni: CNI, fake_plugins: FakePlugins, tmp_path: Path
) -> None:
    fake_plugins.behave("meta", ADD={"error": {"code": 7, "msg": "bad config"}})
    with pytest.raises(PluginInvalidArgumentError) as ei:
        await cni.add_network_list(netlist(), RT)
    assert ei.value.message == "plugin type='meta' failed (add): bad config"
    assert not (tmp_path / "cache" / "results" / "testnet-sb1-eth0").exists()


async def test_add_validates_ids(cni: CNI) -> None:
    for rt in (
        RuntimeConf(container_id="", netns="/x", ifname="eth0"),
        RuntimeConf(container_id="sb1", netns="/x", ifname="way-too-long-ifname"),
    ):
        with pytest.raises(InvalidArgumentError):
            await cni.add_network_list(netlist(), rt)


async def test_missing_plugin(cni: CNI, fake_plugins: FakePlugins) -> None:
    nl = netlist(plugins=[{"type": "main"}, {"type": "ghost"}])
    with pytest.raises(PluginNotFoundError, match="failed to find plugin 'ghost'"):
        await cni.add_network_list(nl, RT)
    assert fake_plugins.commands() == [("main", "ADD")]


async def test_check(cni: CNI, fake_plugins: FakePlugins) -> None:
    with pytest.raises(NotFoundError, match="no cached result"):
        await cni.check_network_list(netlist(), RT)
    await cni.add_network_list(netlist(), RT)
    fake_plugins.clear()
    await cni.check_network_list(netlist(), RT)
    assert fake_plugins.commands() == [("main", "CHECK"), ("meta", "CHECK")]
    assert all(c["stdin"]["prevResult"]["ips"] for c in fake_plugins.calls())
    fake_plugins.clear()
    await cni.check_network_list(netlist(disableCheck=True), RT)
    assert fake_plugins.calls() == []
    with pytest.raises(UnimplementedError, match="does not support the CHECK command"):
        await cni.check_network_list(netlist(version="0.3.1"), RT)


async def test_status_only_from_110(cni: CNI, fake_plugins: FakePlugins) -> None:
    await cni.status_network_list(netlist(version="1.0.0"))
    assert fake_plugins.calls() == []
    await cni.status_network_list(netlist(version="1.1.0"))
    assert fake_plugins.commands() == [("main", "STATUS"), ("meta", "STATUS")]
    call = fake_plugins.calls()[0]
    assert call["stdin"]["name"] == "testnet" and call["env"]["CNI_CONTAINERID"] == ""
    fake_plugins.behave("meta", STATUS={"error": {"code": 50, "msg": "not available"}})
    with pytest.raises(PluginUnavailableError, match="not available"):
        await cni.status_network_list(netlist(version="1.1.0"))


async def test_gc_deletes_stale_and_sends_valid(cni: CNI, fake_plugins: FakePlugins) -> None:
    nl = netlist(version="1.1.0")
    keep = RuntimeConf(container_id="keep", netns="/ns/keep", ifname="eth0")
    stale = RuntimeConf(container_id="stale", netns="/ns/stale", ifname="eth0", args=(("K8S_POD_NAME", "s"),))
    await cni.add_network_list(nl, keep)
    await cni.add_network_list(nl, stale)
    fake_plugins.clear()
    await cni.gc_network_list(nl, [("keep", "eth0")])
    cmds = fake_plugins.commands()
    assert cmds == [("meta", "DEL"), ("main", "DEL"), ("main", "GC"), ("meta", "GC")]
    dels = [c for c in fake_plugins.calls() if c["env"]["CNI_COMMAND"] == "DEL"]
    assert all(c["env"]["CNI_CONTAINERID"] == "stale" for c in dels)
    assert dels[0]["env"]["CNI_ARGS"] == "K8S_POD_NAME=s"  # the cached args
    gc = fake_plugins.calls()[-1]["stdin"]
    assert gc["cni.dev/valid-attachments"] == [{"containerID": "keep", "ifname": "eth0"}]
    assert [a.container_id for a in cni.cache.attachments()] == ["keep"]


async def test_version_and_validate(cni: CNI, fake_plugins: FakePlugins) -> None:
    assert "1.0.0" in await cni.version_info("main")
    assert await cni.validate_network_list(netlist()) == ["portMappings"]
    fake_plugins.behave("meta", versions=["0.3.1"])
    with pytest.raises(Exception, match=r"does not support config version '1\.0\.0'"):
        await cni.validate_network_list(netlist())
