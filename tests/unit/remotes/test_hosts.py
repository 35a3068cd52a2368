from __future__ import annotations

from pathlib import Path

import pytest

from arun.errdefs import InvalidArgumentError
from arun.remotes.hosts import (
    Capability,
    HostsConfig,
    RegistryHost,
    host_directory,
    is_localhost,
    parse_duration,
)


def test_is_localhost() -> None:
    for h in ("localhost", "localhost:5000", "127.0.0.1", "127.0.0.2:80", "[::1]:5000", "::1"):
        assert is_localhost(h), h
    for h in ("docker.io", "10.0.0.1:5000", "localhost.example.com", "[fe80::1]:5000"):
        assert not is_localhost(h), h


def test_defaults() -> None:
    cfg = HostsConfig()
    [d] = cfg.hosts("docker.io")
    assert (d.scheme, d.host, d.path) == ("https", "registry-1.docker.io", "/v2")
    assert d.capabilities == Capability.all()
    assert not d.is_proxy("docker.io")
    [q] = cfg.hosts("quay.io")
    assert (q.scheme, q.host, q.http_fallback) == ("https", "quay.io", False)
    [lp] = cfg.hosts("localhost:5000")
    assert (lp.scheme, lp.http_fallback, lp.skip_verify) == ("https", True, True)
    [l80] = cfg.hosts("127.0.0.1:80")
    assert l80.scheme == "http"
    [lh] = cfg.hosts("localhost")
    assert (lh.scheme, lh.http_fallback) == ("https", False)
    [plain] = HostsConfig(default_scheme="http").hosts("localhost:5000")
    assert (plain.scheme, plain.http_fallback) == ("http", False)


def test_url_building() -> None:
    h = RegistryHost("r:5000", scheme="http", path="/v2")
    assert h.url("a/b", "manifests", "latest") == "http://r:5000/v2/a/b/manifests/latest"
    assert h.url("a", "blobs", "uploads/") == "http://r:5000/v2/a/blobs/uploads/"
    h2 = RegistryHost("m", path="/proxy/api")
    assert h2.url("x", "blobs", "d") == "https://m/proxy/api/x/blobs/d"


def test_host_directory() -> None:
    assert host_directory("localhost:5000") == "localhost_5000_"
    assert host_directory("docker.io") == "docker.io"


def test_parse_duration() -> None:
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    assert parse_duration("0") == 0
    with pytest.raises(InvalidArgumentError):
        parse_duration("5 minutes")


def _write(root: Path, name: str, text: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text(text)
    return d


def test_hosts_toml_mirrors_in_order_then_server(tmp_path: Path) -> None:
    d = _write(
        tmp_path,
        "docker.io",
        """
server = "https://registry-1.docker.io"
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
[host."https://mirror.example.com/some/prefix"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "ca.pem"
  client = [["c.pem", "/abs/k.pem"], "both.pem"]
  dial_timeout = "3s"
  [host."https://mirror.example.com/some/prefix".header]
    x-one = "1"
    x-many = ["a", "b"]
[host."https://raw.example.com/api"]
  override_path = true
""",
    )
    hosts = HostsConfig(config_path=[str(tmp_path)]).hosts("docker.io")
    assert [h.host for h in hosts] == [
        "127.0.0.1:5000",
        "mirror.example.com",
        "raw.example.com",
        "registry-1.docker.io",
    ]
    local, mirror, raw, upstream = hosts
    assert local.scheme == "http" and local.capabilities == Capability.PULL | Capability.RESOLVE
    assert local.is_proxy("docker.io")
    assert mirror.path == "/some/prefix/v2"
    assert mirror.capabilities == Capability.PULL
    assert mirror.skip_verify is True
    assert mirror.ca_certs == (str(d / "ca.pem"),)
    assert mirror.client_pairs == ((str(d / "c.pem"), "/abs/k.pem"), (str(d / "both.pem"), ""))
    assert mirror.dial_timeout == 3
    assert mirror.header == {"x-one": ("1",), "x-many": ("a", "b")}
    assert raw.path == "/api"
    assert upstream.capabilities == Capability.all()
    assert not upstream.is_proxy("docker.io")


def test_hosts_toml_port_directory_and_default(tmp_path: Path) -> None:
    _write(tmp_path, "localhost_5000_", 'server = "http://localhost:5000"\n')
    _write(tmp_path, "_default", '[host."https://catchall.example.com"]\n')
    cfg = HostsConfig(config_path=[str(tmp_path)])
    [h] = cfg.hosts("localhost:5000")
    assert (h.scheme, h.host, h.http_fallback) == ("http", "localhost:5000", False)
    hosts = cfg.hosts("quay.io")
    assert [h.host for h in hosts] == ["catchall.example.com", "quay.io"]


def test_hosts_toml_without_server_keeps_settings(tmp_path: Path) -> None:
    _write(tmp_path, "example.com", "skip_verify = true\n")
    [h] = HostsConfig(config_path=[str(tmp_path)]).hosts("example.com")
    assert (h.host, h.scheme, h.skip_verify) == ("example.com", "https", True)


def test_hosts_toml_empty_host_list_means_no_mirrors(tmp_path: Path) -> None:
    (tmp_path / "example.com").mkdir()
    [h] = HostsConfig(config_path=[str(tmp_path)]).hosts("example.com")
    assert h.host == "example.com"


def test_cert_dir_layout(tmp_path: Path) -> None:
    d = tmp_path / "example.com"
    d.mkdir()
    (d / "ca.crt").write_text("x")
    (d / "client.cert").write_text("x")
    (d / "client.key").write_text("x")
    [h] = HostsConfig(config_path=[str(tmp_path)]).hosts("example.com")
    assert h.ca_certs == (str(d / "ca.crt"),)
    assert h.client_pairs == ((str(d / "client.cert"), str(d / "client.key")),)


@pytest.mark.parametrize(
    "bad",
    [
        'server = "ftp://x"',
        '[host."https://m"]\ncapabilities = ["fly"]',
        '[host."https://m"]\nskip_verify = "yes"',
        '[host."https://m"]\nca = 3',
        '[host."https://m"]\nclient = [["a"]]',
        'server = "https://x"\ndial_timeout = "soon"',
        "server = ",
    ],
)
def test_hosts_toml_errors(tmp_path: Path, bad: str) -> None:
    _write(tmp_path, "example.com", bad)
    with pytest.raises(InvalidArgumentError):
        HostsConfig(config_path=[str(tmp_path)]).hosts("example.com")


def test_legacy_mirrors() -> None:
    cfg = HostsConfig(
        mirrors={
            "docker.io": ["127.0.0.1:5000", "https://mirror.example.com"],
            "*": ["https://any.example.com"],
        },
        tls={"mirror.example.com": RegistryHost("mirror.example.com", skip_verify=True)},
    )
    hosts = cfg.hosts("docker.io")
    assert [(h.scheme, h.host) for h in hosts] == [
        ("http", "127.0.0.1:5000"),
        ("https", "mirror.example.com"),
        ("https", "registry-1.docker.io"),
    ]
    assert hosts[1].skip_verify is True
    assert all(h.has(Capability.PULL) and h.has(Capability.RESOLVE) for h in hosts)
    assert [h.host for h in cfg.hosts("quay.io")] == ["any.example.com", "quay.io"]
    # An endpoint that is the registry itself is not added twice.
    cfg2 = HostsConfig(mirrors={"r.example.com": ["https://r.example.com"]})
    assert [h.host for h in cfg2.hosts("r.example.com")] == ["r.example.com"]


def test_headers_are_added() -> None:
    cfg = HostsConfig(headers={"X-Team": ("a",)})
    [h] = cfg.hosts("quay.io")
    assert h.header == {"X-Team": ("a",)}


def test_ssl_context_errors(tmp_path: Path) -> None:
    h = RegistryHost("x", ca_certs=(str(tmp_path / "missing.pem"),))
    with pytest.raises(InvalidArgumentError, match="unable to load CA cert"):
        h.ssl_context()
    assert RegistryHost("x").ssl_context() is None
    ctx = RegistryHost("x", skip_verify=True).ssl_context()
    assert ctx is not None and not ctx.check_hostname
