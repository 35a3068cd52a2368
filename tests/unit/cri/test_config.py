from __future__ import annotations

import pytest

from arun.core.runtime import RUNTIME_ARUN
from arun.cri.config import CRIConfig, merge_tables
from arun.errdefs import InvalidArgumentError


def test_defaults() -> None:
    cfg = merge_tables({})
    assert cfg.sandbox_image == "registry.k8s.io/pause:3.10"
    assert cfg.containerd.default_runtime_name == "runc"
    assert cfg.runtime("").runtime_type == RUNTIME_ARUN
    assert cfg.runtime("runc") is cfg.runtime("")
    assert cfg.cni.conf_dir == "/etc/cni/net.d" and cfg.cni.max_conf_num == 1


def test_v2_layout() -> None:
    cfg = merge_tables(
        {
            "sandbox_image": "example.com/pause:1",
            "restrict_oom_score_adj": True,
            "containerd": {
                "snapshotter": "native",
                "runtimes": {"gvisor": {"runtime_type": "io.containerd.runsc.v1", "options": {"Root": "/r"}}},
            },
            "cni": {"bin_dir": "/usr/lib/cni", "conf_dir": "/x"},
            "registry": {"config_path": "/etc/certs.d", "mirrors": {"docker.io": {"endpoint": ["http://m"]}}},
        }
    )
    assert cfg.sandbox_image == "example.com/pause:1" and cfg.restrict_oom_score_adj
    assert cfg.containerd.snapshotter == "native"
    assert cfg.runtime("gvisor").runtime_type == "io.containerd.runsc.v1"
    assert cfg.runtime("gvisor").options == {"Root": "/r"}
    # The default handler stays next to the configured ones.
    assert cfg.runtime("").runtime_type == RUNTIME_ARUN
    assert cfg.registry.mirrors["docker.io"].endpoint == ["http://m"]


def test_v3_sections_and_precedence() -> None:
    runtime = {
        "containerd": {"default_runtime_name": "crun", "runtimes": {"crun": {"runtime_type": "x.y.z"}}},
        "enable_unprivileged_icmp": False,
    }
    images = {
        "snapshotter": "native",
        "pinned_images": {"sandbox": "e.com/pause:9"},
        "max_concurrent_downloads": 7,
    }
    cfg = merge_tables({"stream_server_port": "10010"}, runtime, images, version=3)
    assert cfg.runtime("").runtime_type == "x.y.z"
    assert cfg.sandbox_image == "e.com/pause:9" and cfg.containerd.snapshotter == "native"
    assert cfg.max_concurrent_downloads == 7 and not cfg.enable_unprivileged_icmp
    assert cfg.stream_server_port == "10010"
    # In a version 2 config the v2 table wins over the v3 sections; in version 3 the reverse.
    assert (
        merge_tables({"sandbox_image": "v2/pause:1"}, None, images, version=2).sandbox_image == "v2/pause:1"
    )
    assert (
        merge_tables({"sandbox_image": "v2/pause:1"}, None, images, version=3).sandbox_image
        == "e.com/pause:9"
    )


@pytest.mark.parametrize(
    "table",
    [
        {"no_such_key": 1},
        {"containerd": {"default_runtime_name": "missing"}},
        {"containerd": {"runtimes": {"x": {"runtime_type": "", "runtime_path": ""}}}},
        {"cni": {"ip_pref": "ipv5"}},
        {"max_concurrent_downloads": -1},
        {"containerd": {"runtimes": {"x": {"sandboxer": "bogus"}}}},
    ],
)
def test_bad_config(table: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        merge_tables(table)


def test_unknown_handler() -> None:
    with pytest.raises(InvalidArgumentError, match="nope"):
        CRIConfig().runtime("nope")


def test_registry_hosts_from_config() -> None:
    from types import SimpleNamespace

    from arun.cri.images.service import hosts_config

    cfg = merge_tables(
        {
            "registry": {
                "mirrors": {"docker.io": {"endpoint": ["http://mirror:5000"]}},
                "configs": {"mirror:5000": {"tls": {"insecure_skip_verify": True, "ca_file": "/ca.pem"}}},
                "headers": {"X-Test": ["1"]},
            }
        }
    )
    hc = hosts_config(SimpleNamespace(config=cfg))  # type: ignore[arg-type]
    hosts = hc.hosts("docker.io")
    assert hosts[0].host == "mirror:5000" and hosts[0].scheme == "http"
    assert hosts[0].skip_verify and hosts[0].ca_certs == ("/ca.pem",)
    assert hc.headers == {"X-Test": ("1",)}
    with_path = hosts_config(SimpleNamespace(config=merge_tables({"registry": {"config_path": "/a:/b"}})))  # type: ignore[arg-type]
    assert list(with_path.config_path) == ["/a", "/b"] and not with_path.mirrors
