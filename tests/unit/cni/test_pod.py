from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from arun.cni.errors import CNINotInitializedError, InvalidResultError, PluginError, PluginNotFoundError
from arun.cni.pod import NOT_READY_REASON, POD_ANNOTATIONS_CAPABILITY, PodNetwork, PodNetworkRequest
from arun.cni.types import BandWidth, DNSConfig, PortMapping
from arun.errdefs import FailedPreconditionError, InvalidArgumentError

from .fakes import FakePlugins, write_conflist

CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "podnet",
    "plugins": [
        {"type": "main"},
        {"type": "meta", "capabilities": {"portMappings": True, "bandwidth": True, "dns": True}},
    ],
}

REQ = PodNetworkRequest(
    sandbox_id="sb1",
    pod_namespace="default",
    pod_name="web",
    pod_uid="uid-1",
    port_mappings=(PortMapping(8080, 80, "TCP"), PortMapping(0, 81)),
    dns=DNSConfig(("10.0.0.10",), ("svc.local",), ("ndots:5",)),
    bandwidth=BandWidth(1000, 2000, 3000, 4000),
    annotations={"a": "b"},
)


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    return tmp_path / "net.d"


@pytest.fixture
def netns_file(tmp_path: Path) -> str:
    # fake plugins never enter it; an ordinary file is enough (and is "not a netns")
    p = tmp_path / "ns"
    p.write_text("")
    return str(p)


def make(fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, **kw: Any) -> PodNetwork:
    for name in ("main", "meta", "loopback"):
        if not (fake_plugins.bin_dir / name).exists():
            fake_plugins.add(name)
    return PodNetwork(
        conf_dir=str(conf_dir),
        bin_dirs=[str(fake_plugins.bin_dir)],
        cache_dir=str(tmp_path / "cache"),
        netns_dir=str(tmp_path / "netns"),
        **kw,
    )


async def test_not_ready_without_config_then_ready_after_write(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path
) -> None:
    pn = make(fake_plugins, conf_dir, tmp_path)
    st = await pn.status()
    assert not st.ready
    assert st.reason == NOT_READY_REASON
    assert st.message.startswith("Network plugin returns error: cni plugin not initialized")
    assert str(conf_dir) in st.message
    assert pn.last_load_status() != "OK"
    with pytest.raises(CNINotInitializedError) as ei:
        await pn.setup(REQ, "/x")
    assert isinstance(ei.value, FailedPreconditionError)
    # the conf dir appears: picked up on the next call, no restart
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    st = await pn.status()
    assert st.ready, st
    assert pn.last_load_status() == "OK"
    assert [n.name for n in pn.networks] == ["cni-loopback", "podnet"]


async def test_broken_conflist_not_ready_with_reason(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path
) -> None:
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    pn = make(fake_plugins, conf_dir, tmp_path)
    assert (await pn.status()).ready
    # an in-place edit that breaks it (same name, new content)
    (conf_dir / "10-podnet.conflist").write_text('{"cniVersion": "1.0.0", "name": "podnet", "plugins": []}')
    st = await pn.status()
    assert not st.ready
    assert "10-podnet.conflist" in st.message and "no plugins in list" in st.message
    with pytest.raises(CNINotInitializedError, match="no plugins in list"):
        await pn.setup(REQ, "/x")
    # fixed again
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    assert (await pn.status()).ready


async def test_reload_picks_up_an_earlier_file(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path
) -> None:
    write_conflist(conf_dir, "20-podnet.conflist", CONFLIST)
    pn = make(fake_plugins, conf_dir, tmp_path)
    assert [n.name for n in pn.networks] == ["cni-loopback", "podnet"]
    write_conflist(conf_dir, "10-other.conflist", CONFLIST | {"name": "other"})
    assert [n.name for n in pn.networks] == ["cni-loopback", "other"]
    os.unlink(conf_dir / "10-other.conflist")
    assert [n.name for n in pn.networks] == ["cni-loopback", "podnet"]


async def test_setup_args_runtime_config_and_result(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    pn = make(fake_plugins, conf_dir, tmp_path)
    fake_plugins.behave(
        "loopback",
        ADD={
            "result": {
                "cniVersion": "0.3.1",
                "interfaces": [{"name": "lo", "sandbox": netns_file}],
                "ips": [{"version": "4", "interface": 0, "address": "127.0.0.1/8"}],
            }
        },
    )
    res = await pn.setup(REQ, netns_file)
    calls = fake_plugins.calls()
    assert sorted(c["plugin"] for c in calls) == ["loopback", "main", "meta"]
    by = {c["plugin"]: c for c in calls}
    assert by["loopback"]["env"]["CNI_IFNAME"] == "lo"
    assert by["loopback"]["stdin"]["name"] == "cni-loopback"
    assert by["main"]["env"]["CNI_IFNAME"] == "eth0"
    assert by["main"]["env"]["CNI_NETNS"] == netns_file
    assert by["main"]["env"]["CNI_CONTAINERID"] == "sb1"
    args = dict(kv.split("=", 1) for kv in by["main"]["env"]["CNI_ARGS"].split(";"))
    assert args == {
        "IgnoreUnknown": "1",
        "K8S_POD_NAMESPACE": "default",
        "K8S_POD_NAME": "web",
        "K8S_POD_INFRA_CONTAINER_ID": "sb1",
        "K8S_POD_UID": "uid-1",
    }
    assert "runtimeConfig" not in by["main"]["stdin"]
    assert by["meta"]["stdin"]["runtimeConfig"] == {
        # hostPort 0 dropped, protocol lower-cased, as containerd's toCNIPortMappings
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000, "egressBurst": 4000},
        "dns": {"servers": ["10.0.0.10"], "searches": ["svc.local"], "options": ["ndots:5"]},
    }
    assert REQ.capability_args()[POD_ANNOTATIONS_CAPABILITY] == {"a": "b"}
    # result: go-cni's shape
    assert res.ips() == ["10.99.0.2"]
    assert res.pod_ips() == ("10.99.0.2", [])
    assert res.ips("lo") == ["127.0.0.1"]
    assert res.interfaces["eth0"].sandbox == netns_file
    assert len(res.raw) == 2
    # the CRI can rebuild it after a restart
    cached = pn.cached_result("sb1")
    assert cached is not None and cached.ips() == ["10.99.0.2"]


async def test_failure_on_second_plugin_dels_the_chain(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    pn = make(fake_plugins, conf_dir, tmp_path, setup_serially=True)
    fake_plugins.behave("meta", ADD={"error": {"code": 999, "msg": "iptables exploded"}})
    with pytest.raises(PluginError, match="iptables exploded"):
        await pn.setup(REQ, netns_file)
    cmds = fake_plugins.commands()
    assert cmds[:3] == [("loopback", "ADD"), ("main", "ADD"), ("meta", "ADD")]
    # undo: every network DEL'd, each chain in reverse, networks in reverse
    assert cmds[3:] == [("meta", "DEL"), ("main", "DEL"), ("loopback", "DEL")]
    assert pn.cni.cache.attachments("sb1") == []


async def test_missing_plugin_binary_is_clear_and_undone(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(
        conf_dir, "10-podnet.conflist", CONFLIST | {"plugins": [{"type": "main"}, {"type": "ghost"}]}
    )
    pn = make(fake_plugins, conf_dir, tmp_path)
    with pytest.raises(PluginNotFoundError) as ei:
        await pn.setup(REQ, netns_file)
    assert "failed to find plugin 'ghost'" in ei.value.message
    # the undo DEL of the podnet chain fails the same way and is noted, not hidden
    assert any("cleanup after the failed setup" in n for n in getattr(ei.value, "__notes__", []))
    assert ("main", "DEL") in fake_plugins.commands()
    assert ("loopback", "DEL") in fake_plugins.commands()


async def test_no_ip_on_default_interface_is_an_error_and_undone(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    pn = make(fake_plugins, conf_dir, tmp_path)
    fake_plugins.behave("main", ADD={"result": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]}})
    with pytest.raises(InvalidResultError, match="failed to find network info for sandbox 'sb1'"):
        await pn.setup(REQ, netns_file)
    assert ("main", "DEL") in fake_plugins.commands()


async def test_teardown_idempotent_and_netns_gone(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    pn = make(fake_plugins, conf_dir, tmp_path)
    await pn.setup(REQ, netns_file)
    fake_plugins.clear()
    await pn.teardown(REQ, netns_file)
    dels = fake_plugins.calls()
    assert [c["plugin"] for c in dels] == ["meta", "main", "loopback"]
    # a path that is not a live namespace is passed as ""
    assert {c["env"]["CNI_NETNS"] for c in dels} == {""}
    assert dels[0]["stdin"]["prevResult"]["ips"]
    fake_plugins.clear()
    await pn.teardown(REQ, netns_file)
    await pn.teardown(REQ, "")
    assert [c["env"]["CNI_COMMAND"] for c in fake_plugins.calls()] == ["DEL"] * 6


async def test_teardown_tolerates_not_found(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    pn = make(fake_plugins, conf_dir, tmp_path)
    fake_plugins.behave("main", DEL={"error": {"code": 999, "msg": "link eth0 not found"}})
    await pn.teardown(REQ, netns_file)
    fake_plugins.behave("main", DEL={"error": {"code": 999, "msg": "device busy"}})
    with pytest.raises(PluginError, match="device busy"):
        await pn.teardown(REQ, netns_file)
    # the other networks were still deleted
    assert fake_plugins.commands()[-3:] == [("meta", "DEL"), ("main", "DEL"), ("loopback", "DEL")]


async def test_teardown_without_config_uses_cached_configs(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    pn = make(fake_plugins, conf_dir, tmp_path)
    await pn.setup(REQ, netns_file)
    os.unlink(conf_dir / "10-podnet.conflist")
    assert not (await pn.status()).ready
    fake_plugins.clear()
    await pn.teardown(REQ, netns_file)
    assert fake_plugins.commands() == [("meta", "DEL"), ("main", "DEL"), ("loopback", "DEL")]
    assert pn.cni.cache.attachments("sb1") == []
    # nothing cached any more: nothing to do, no error
    fake_plugins.clear()
    await pn.teardown(REQ, netns_file)
    assert fake_plugins.calls() == []


async def test_check_skips_pre_040_networks(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    pn = make(fake_plugins, conf_dir, tmp_path)
    await pn.setup(REQ, netns_file)
    fake_plugins.clear()
    await pn.check(REQ, netns_file)
    assert fake_plugins.commands() == [("main", "CHECK"), ("meta", "CHECK")]


async def test_max_conf_num_and_interface_names(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(conf_dir, "10-a.conflist", CONFLIST | {"name": "a"})
    write_conflist(conf_dir, "20-b.conf", {"cniVersion": "1.0.0", "name": "b", "type": "main"})
    pn = make(fake_plugins, conf_dir, tmp_path, max_conf_num=2, loopback="none")
    res = await pn.setup(REQ, netns_file)
    ifnames = {(c["stdin"]["name"], c["env"]["CNI_IFNAME"]) for c in fake_plugins.calls()}
    assert ifnames == {("a", "eth0"), ("b", "eth1")}
    assert res.ips("eth1") == ["10.99.0.2"]
    info = pn.config_info()
    assert [(n["Config"]["Name"], n["IFName"]) for n in info["Networks"]] == [("a", "eth0"), ("b", "eth1")]
    assert info["PluginMaxConfNum"] == 2 and info["Prefix"] == "eth"
    json.dumps(info)


async def test_same_sandbox_calls_are_serialised(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST | {"plugins": [{"type": "main"}]})
    pn = make(fake_plugins, conf_dir, tmp_path, loopback="none")
    fake_plugins.behave(
        "main", ADD={"sleep": 0.3, "result": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.1.1/24"}]}}
    )
    await asyncio.gather(pn.setup(REQ, netns_file), pn.teardown(REQ, netns_file))
    # DEL started only after ADD finished: the ADD's cached result reached it
    assert fake_plugins.commands() == [("main", "ADD"), ("main", "DEL")]
    assert fake_plugins.calls()[1]["stdin"]["prevResult"]["ips"][0]["address"] == "10.1.1.1/24"
    assert pn._locks == {}


def test_bad_loopback_mode() -> None:
    with pytest.raises(InvalidArgumentError):
        PodNetwork(loopback="bogus")  # type: ignore[arg-type]


async def test_create_removes_netns_on_failure_without_root(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path
) -> None:
    pn = make(fake_plugins, conf_dir, tmp_path)
    # not ready: refused before anything is created
    with pytest.raises(CNINotInitializedError):
        await pn.create(REQ)
    assert not (tmp_path / "netns").exists()


async def test_result_json_round_trip_in_go_cni_shape(
    fake_plugins: FakePlugins, conf_dir: Path, tmp_path: Path, netns_file: str
) -> None:
    write_conflist(conf_dir, "10-podnet.conflist", CONFLIST)
    pn = make(fake_plugins, conf_dir, tmp_path, loopback="none")
    fake_plugins.behave(
        "main",
        ADD={
            "result": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "veth9", "mac": "aa:bb"}, {"name": "eth0", "sandbox": netns_file}],
                "ips": [
                    {"interface": 1, "address": "fd00::5/64"},
                    {"interface": 1, "address": "10.4.0.5/24", "gateway": "10.4.0.1"},
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.4.0.1"}],
                "dns": {"nameservers": ["10.4.0.10"]},
            }
        },
    )
    res = await pn.setup(REQ, netns_file)
    assert res.pod_ips() == ("10.4.0.5", ["fd00::5"])
    assert res.pod_ips("ipv6") == ("fd00::5", ["10.4.0.5"])
    assert res.pod_ips("cni") == ("fd00::5", ["10.4.0.5"])
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["Interfaces"]["eth0"] == {
        "IPConfigs": [{"IP": "fd00::5", "Gateway": None}, {"IP": "10.4.0.5", "Gateway": "10.4.0.1"}],
        "Mac": "",
        "Sandbox": netns_file,
        "PciID": "",
        "SocketPath": "",
    }
    assert doc["Interfaces"]["veth9"]["IPConfigs"] is None
    assert doc["Interfaces"]["veth9"]["Mac"] == "aa:bb"
    assert doc["DNS"] == [{"nameservers": ["10.4.0.10"]}]
    assert doc["Routes"] == [{"dst": "0.0.0.0/0", "gw": "10.4.0.1"}]
    back = type(res).from_json(doc)
    assert back.pod_ips() == res.pod_ips()
    assert back.to_json() == doc
    with pytest.raises(InvalidResultError):
        type(res).from_json({"Interfaces": {"eth0": {"IPConfigs": [{"IP": "nope"}]}}})
