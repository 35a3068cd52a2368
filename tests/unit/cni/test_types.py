from __future__ import annotations

import ipaddress

import pytest

from arun.cni.errors import InvalidConfigError, InvalidResultError
from arun.cni.types import (
    BandWidth,
    DNSConfig,
    PortMapping,
    convert_result,
    parse_result,
    parse_version,
    version_at_least,
)
from arun.errdefs import InternalError, InvalidArgumentError

RESULT_100 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "4e:b3:4c:e7:d9:04"},
        {"name": "veth1", "mac": "5e:cd:3f:74:64:f9"},
        {"name": "eth0", "mac": "e6:6a:98:a6:83:8d", "sandbox": "/run/netns/x", "mtu": 1400},
    ],
    "ips": [
        {"interface": 2, "address": "10.1.2.3/24", "gateway": "10.1.2.1"},
        {"interface": 2, "address": "fd00::3/64"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.2.254", "mtu": 1300}],
    "dns": {"nameservers": ["10.0.0.10"], "search": ["svc.local"]},
}


def test_version_parsing_and_order() -> None:
    assert parse_version("1.0.0") == (1, 0, 0)
    assert parse_version("") == (0, 1, 0)
    assert version_at_least("0.4.0", "0.4.0")
    assert version_at_least("1.0.0", "0.4.0")
    assert not version_at_least("0.3.1", "0.4.0")
    assert not version_at_least("0.10.0", "1.0.0")
    with pytest.raises(InvalidConfigError):
        parse_version("1.0")
    with pytest.raises(InvalidArgumentError):
        parse_version("v1.0.0")


def test_parse_result_100() -> None:
    r = parse_result(RESULT_100)
    assert r.cni_version == "1.0.0"
    assert [i.name for i in r.interfaces] == ["cni0", "veth1", "eth0"]
    assert r.interfaces[2].sandbox == "/run/netns/x"
    assert r.interfaces[2].mtu == 1400
    assert r.ips[0].ip == ipaddress.ip_address("10.1.2.3")
    assert r.ips[0].address.network == ipaddress.ip_network("10.1.2.0/24")
    assert r.ips[0].gateway == ipaddress.ip_address("10.1.2.1")
    assert r.ips[0].interface == 2
    assert r.ips[1].gateway is None
    assert str(r.routes[1].dst) == "10.9.0.0/16"
    assert r.routes[1].gw == ipaddress.ip_address("10.1.2.254")
    assert r.routes[1].mtu == 1300
    assert r.dns.nameservers == ("10.0.0.10",)
    assert r.dns.search == ("svc.local",)
    assert r.raw is RESULT_100


def test_parse_result_040_and_020() -> None:
    r040 = parse_result(
        {
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.1.2.3/24"}],
        }
    )
    assert str(r040.ips[0].address) == "10.1.2.3/24"
    r020 = parse_result(
        {
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1", "routes": [{"dst": "0.0.0.0/0"}]},
            "ip6": {"ip": "fd00::3/64"},
        }
    )
    assert [str(i.ip) for i in r020.ips] == ["10.1.2.3", "fd00::3"]
    assert r020.interfaces == ()
    assert [str(rt.dst) for rt in r020.routes] == ["0.0.0.0/0"]


def test_missing_version_uses_default() -> None:
    r = parse_result({"ips": [{"address": "10.0.0.2/8"}]}, default_version="1.0.0")
    assert r.cni_version == "1.0.0"


@pytest.mark.parametrize(
    "doc",
    [
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.300/24"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": ""}]},
        {
            "cniVersion": "1.0.0",
            "ips": [{"interface": 1, "address": "10.1.2.3/24"}],
            "interfaces": [{"name": "a"}],
        },
        {"cniVersion": "1.0.0", "ips": "10.1.2.3/24"},
        {"cniVersion": "1.0.0", "interfaces": [{"mac": "x"}]},
        {"cniVersion": "1.0.0", "routes": [{"dst": "nope"}]},
        {"cniVersion": "1.0.0", "dns": {"nameservers": [1]}},
        {"cniVersion": "9.0.0"},
        {"cniVersion": "one"},
    ],
)
def test_invalid_results(doc: dict[str, object]) -> None:
    with pytest.raises(InvalidResultError) as ei:
        parse_result(doc)
    assert isinstance(ei.value, InternalError)


def test_convert_100_to_040_adds_ip_versions_and_drops_new_fields() -> None:
    out = convert_result(RESULT_100, "0.4.0")
    assert out["cniVersion"] == "0.4.0"
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    assert all("mtu" not in i for i in out["interfaces"])
    assert out["ips"][0] == {"version": "4", "interface": 2, "address": "10.1.2.3/24", "gateway": "10.1.2.1"}
    assert out["routes"][1] == {"dst": "10.9.0.0/16", "gw": "10.1.2.254", "mtu": 1300}
    assert out["dns"] == {"nameservers": ["10.0.0.10"], "search": ["svc.local"]}
    back = convert_result(out, "1.0.0")
    assert "version" not in back["ips"][0]
    assert parse_result(back).ips == parse_result(RESULT_100).ips


def test_convert_to_020_and_identity() -> None:
    out = convert_result(RESULT_100, "0.2.0")
    assert out["ip4"] == {
        "ip": "10.1.2.3/24",
        "gateway": "10.1.2.1",
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.2.254", "mtu": 1300}],
    }
    assert out["ip6"] == {"ip": "fd00::3/64"}
    assert convert_result(RESULT_100, "1.0.0") is RESULT_100


def test_capability_json_uses_cni_conventions() -> None:
    assert PortMapping(8080, 80, "tcp", "127.0.0.1").to_json() == {
        "hostPort": 8080,
        "containerPort": 80,
        "protocol": "tcp",
        "hostIP": "127.0.0.1",
    }
    assert "hostIP" not in PortMapping(8080, 80).to_json()
    assert BandWidth(1000, 2000, 3000, 4000).to_json() == {
        "ingressRate": 1000,
        "ingressBurst": 2000,
        "egressRate": 3000,
        "egressBurst": 4000,
    }
    assert DNSConfig(("1.1.1.1",), ("a.b",), ("ndots:5",)).to_json() == {
        "servers": ["1.1.1.1"],
        "searches": ["a.b"],
        "options": ["ndots:5"],
    }
