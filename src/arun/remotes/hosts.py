"""Which endpoints serve a registry: containerd's ``hosts.toml`` directories, the older CRI
``registry.mirrors`` form, and the defaults.

``HostsConfig.hosts(registry)`` returns the endpoints to try, in order, for a registry
name as it appears in a reference (``docker.io``, ``localhost:5000``). Each endpoint says
what it may be used for (pull, resolve, push), how to reach it (scheme, API path, TLS,
extra headers) and whether it is a mirror of the registry asked for.

``hosts.toml`` (one directory per registry under ``config_path``; ``host:port`` is
written ``host_port_``; ``_default`` applies to any registry without its own)::

    server = "https://registry-1.docker.io"    # the upstream, tried last

    [host."http://127.0.0.1:5000"]              # mirrors, tried first, in file order
      capabilities = ["pull", "resolve"]
      skip_verify = true
      ca = "/etc/certs/ca.pem"                  # or a list; relative to the directory
      client = [["/c/cert.pem", "/c/key.pem"]]
      override_path = true                      # the URL path is the API root (no /v2)
      dial_timeout = "3s"
      [host."http://127.0.0.1:5000".header]
        x-custom = "1"

A registry with no configuration gets one endpoint: ``registry-1.docker.io`` over HTTPS for
``docker.io``; for ``localhost`` and loopback addresses with a port other than 443,
HTTP — tried as HTTPS first and falling back to plain HTTP when the server does not speak
TLS, as containerd does; HTTPS otherwise.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import os
import re
import ssl
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from arun.errdefs import InvalidArgumentError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DOCKER_HOST",
    "Capability",
    "HostsConfig",
    "RegistryHost",
    "host_directory",
    "is_localhost",
    "load_hosts_dir",
    "parse_duration",
    "parse_hosts_toml",
]

DEFAULT_DOCKER_HOST = "registry-1.docker.io"


class Capability(enum.IntFlag):
    PULL = 1
    RESOLVE = 2
    PUSH = 4
    REFERRERS = 8

    @classmethod
    def all(cls) -> Capability:
        return cls.PULL | cls.RESOLVE | cls.PUSH | cls.REFERRERS

    @classmethod
    def parse(cls, names: Sequence[str]) -> Capability:
        out = cls(0)
        for n in names:
            try:
                out |= cls[n.upper()]
            except KeyError:
                raise InvalidArgumentError(f"unknown capability {n!r}") from None
        return out


def is_localhost(host: str) -> bool:
    """``localhost`` or a loopback IP, with or without a port (containerd's IsLocalhost)."""
    h = _split_port(host)[0]
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_port(host: str) -> tuple[str, str]:
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            rest = host[end + 1 :]
            return host[: end + 1], rest[1:] if rest.startswith(":") else ""
        return host, ""
    if host.count(":") == 1:
        h, _, p = host.partition(":")
        return h, p
    return host, ""


@dataclass(frozen=True)
class RegistryHost:
    """One endpoint serving a registry."""

    host: str
    scheme: str = "https"
    path: str = "/v2"
    capabilities: Capability = field(default_factory=Capability.all)
    skip_verify: bool | None = None
    ca_certs: tuple[str, ...] = ()
    client_pairs: tuple[tuple[str, str], ...] = ()
    header: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dial_timeout: float | None = None
    # Try HTTPS first and fall back to plain HTTP if the server does not speak TLS.
    http_fallback: bool = False

    def url(self, *parts: str) -> str:
        path = "/".join(p.strip("/") for p in (self.path, *parts) if p.strip("/"))
        trailing = "/" if parts and parts[-1].endswith("/") else ""
        return f"{self.scheme}://{self.host}/{path}{trailing}"

    def is_proxy(self, registry: str) -> bool:
        """True if this endpoint serves ``registry`` as a mirror (requests then carry
        ``?ns=<registry>``, as containerd sends them)."""
        if registry == self.host:
            return False
        return not (registry == "docker.io" and self.host == DEFAULT_DOCKER_HOST)

    def has(self, cap: Capability) -> bool:
        return bool(self.capabilities & cap)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings of this endpoint; None for the system defaults."""
        if self.skip_verify is None and not self.ca_certs and not self.client_pairs:
            return None
        ctx = ssl.create_default_context()
        if self.skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        for ca in self.ca_certs:
            try:
                ctx.load_verify_locations(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgumentError(
                    f"unable to load CA cert {ca!r} for {self.host!r}: {exc}"
                ) from None
        for cert, key in self.client_pairs:
            try:
                ctx.load_cert_chain(cert, key or None)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgumentError(
                    f"unable to load client cert {cert!r} for {self.host!r}: {exc}"
                ) from None
        return ctx


_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(s: str) -> float:
    """A Go duration string (``1m30s``, ``500ms``) in seconds."""
    text = s.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise InvalidArgumentError(f"invalid duration {s!r}")
    return total


def host_directory(host: str) -> str:
    """``host:port`` → ``host_port_`` (directory names cannot hold ``:`` portably)."""
    idx = host.rfind(":")
    if idx > 0:
        return f"{host[:idx]}_{host[idx + 1 :]}_"
    return host


def _abs(p: str, base: Path) -> str:
    return p if os.path.isabs(p) else str(base / p)


_NETLOC_RE = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
_HOST_KEYS = frozenset(
    {
        "capabilities",
        "ca",
        "client",
        "skip_verify",
        "header",
        "override_path",
        "dial_timeout",
        "host",
        "server",
    }
)


def _parse_host_entry(server: str | None, base: Path, cfg: Mapping[str, Any], where: str) -> RegistryHost:
    """One endpoint; ``server`` None keeps the address empty (the registry's default)."""
    unknown = set(cfg) - _HOST_KEYS
    if unknown:
        log.warning("%s: ignoring unknown keys %s", where, sorted(unknown))
    override = bool(cfg.get("override_path", False))
    netloc, scheme, path = "", "https", "/v2"
    if server is not None:
        if not server.startswith("http"):
            server = "https://" + server
        u = urlsplit(server)
        if u.scheme not in ("http", "https") or not _NETLOC_RE.match(u.netloc):
            raise InvalidArgumentError(f"{where}: invalid server {server!r}")
        netloc, scheme, path = u.netloc, u.scheme, u.path
        if path:
            path = os.path.normpath(path)
            if not path.endswith("/v2") and not override:
                path += "/v2"
        elif not override:
            path = "/v2"
    caps_cfg = cfg.get("capabilities")
    caps = Capability.all()
    if caps_cfg is not None:
        if not isinstance(caps_cfg, list) or not all(isinstance(c, str) for c in caps_cfg):
            raise InvalidArgumentError(f"{where}: capabilities must be a list of strings")
        if caps_cfg:
            caps = Capability.parse(caps_cfg)
    ca = cfg.get("ca")
    cas: tuple[str, ...] = ()
    if isinstance(ca, str):
        cas = (_abs(ca, base),)
    elif isinstance(ca, list) and all(isinstance(c, str) for c in ca):
        cas = tuple(_abs(c, base) for c in ca)
    elif ca is not None:
        raise InvalidArgumentError(f"{where}: invalid type for 'ca'")
    pairs: list[tuple[str, str]] = []
    client = cfg.get("client")
    if isinstance(client, str):
        pairs.append((_abs(client, base), ""))
    elif isinstance(client, list):
        for item in client:
            if isinstance(item, str):
                pairs.append((_abs(item, base), ""))
            elif isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
                pairs.append((_abs(item[0], base), _abs(item[1], base)))
            else:
                raise InvalidArgumentError(f"{where}: invalid pair {item!r} for 'client'")
    elif client is not None:
        raise InvalidArgumentError(f"{where}: invalid type for 'client'")
    skip = cfg.get("skip_verify")
    if skip is not None and not isinstance(skip, bool):
        raise InvalidArgumentError(f"{where}: skip_verify must be a boolean")
    headers: dict[str, tuple[str, ...]] = {}
    for k, v in (cfg.get("header") or {}).items():
        if isinstance(v, str):
            headers[k] = (v,)
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            headers[k] = tuple(v)
        else:
            raise InvalidArgumentError(f"{where}: invalid type for header {k!r}")
    dial = cfg.get("dial_timeout")
    dial_timeout = parse_duration(dial) if isinstance(dial, str) and dial else None
    return RegistryHost(
        host=netloc,
        scheme=scheme,
        path=path,
        capabilities=caps,
        skip_verify=skip,
        ca_certs=cas,
        client_pairs=tuple(pairs),
        header=headers,
        dial_timeout=dial_timeout,
    )


def parse_hosts_toml(data: str, base: Path, where: str = "hosts.toml") -> list[RegistryHost | None]:
    """The endpoints of one hosts.toml: the ``[host."…"]`` entries in file order, then
    the ``server`` entry — None there when the file names no server (the caller fills in
    the registry's default)."""
    try:
        doc = tomllib.loads(data)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgumentError(f"{where}: {exc}") from None
    out: list[RegistryHost | None] = []
    hosts = doc.get("host") or {}
    if not isinstance(hosts, dict):
        raise InvalidArgumentError(f"{where}: 'host' must be a table")
    # tomllib keeps insertion order, which is file order.
    for name, cfg in hosts.items():
        if not isinstance(cfg, dict):
            raise InvalidArgumentError(f"{where}: host {name!r} must be a table")
        out.append(_parse_host_entry(name, base, cfg, f"{where} host {name!r}"))
    top = {k: v for k, v in doc.items() if k not in ("host", "server")}
    server = doc.get("server", "")
    if not isinstance(server, str):
        raise InvalidArgumentError(f"{where}: server must be a string")
    if server:
        out.append(_parse_host_entry(server, base, top, f"{where} server"))
    else:
        # Settings for the registry's own endpoint without its address.
        out.append(_parse_host_entry(None, base, top, f"{where} server") if top else None)
    return out


def _cert_dir_hosts(directory: Path) -> list[RegistryHost | None]:
    """Docker's certs.d layout: ``*.crt`` CAs and ``*.cert``/``*.key`` client pairs."""
    cas: list[str] = []
    pairs: list[tuple[str, str]] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    for n in names:
        p = directory / n
        if p.is_dir():
            continue
        if n.endswith(".crt"):
            cas.append(str(p))
        elif n.endswith(".cert"):
            key = directory / (n[: -len(".cert")] + ".key")
            pairs.append((str(p), str(key) if key.exists() else ""))
    if not cas and not pairs:
        return [None]
    return [RegistryHost(host="", ca_certs=tuple(cas), client_pairs=tuple(pairs))]


def load_hosts_dir(directory: Path) -> list[RegistryHost | None]:
    path = directory / "hosts.toml"
    try:
        data = path.read_text()
    except FileNotFoundError:
        data = ""
    if not data.strip():
        return _cert_dir_hosts(directory)
    return parse_hosts_toml(data, directory, str(path))


def _default_host(registry: str, base: RegistryHost | None, default_scheme: str) -> RegistryHost:
    """Complete the registry's own endpoint (``base`` carries settings from the file)."""
    b = base or RegistryHost(host="")
    if registry == "docker.io":
        return replace(b, host=DEFAULT_DOCKER_HOST, scheme="https", path="/v2")
    if is_localhost(registry) and not default_scheme:
        port = _split_port(registry)[1]
        if port in ("", "443"):
            return replace(b, host=registry, scheme="https", path="/v2", skip_verify=True)
        if port == "80":
            return replace(b, host=registry, scheme="http", path="/v2")
        # Ambiguous: containerd tries TLS (unverified) and falls back to plain HTTP.
        skip = b.skip_verify if b.skip_verify is not None else True
        return replace(b, host=registry, scheme="https", path="/v2", skip_verify=skip, http_fallback=True)
    return replace(b, host=registry, scheme=default_scheme or "https", path="/v2")


@dataclass
class HostsConfig:
    """Endpoint configuration for every registry.

    ``config_path``: directories (``:``-separated in config files) holding one directory
    per registry with a ``hosts.toml``. ``mirrors``: the legacy CRI form, registry →
    endpoint URLs (``"*"`` for any registry). ``default_scheme``: ``http`` forces plain
    HTTP for registries without configuration (``--plain-http``).
    """

    config_path: Sequence[str] = ()
    mirrors: Mapping[str, Sequence[str]] = field(default_factory=dict)
    default_scheme: str = ""
    # Extra TLS settings for the legacy form, by endpoint host.
    tls: Mapping[str, RegistryHost] = field(default_factory=dict)
    # Headers added to every request (the CRI ``registry.headers`` setting).
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def host_dir(self, registry: str) -> Path | None:
        for root in self.config_path:
            if not root:
                continue
            candidates = []
            d = host_directory(registry)
            if d != registry:
                candidates.append(d)
            candidates += [registry, "_default"]
            for c in candidates:
                p = Path(root) / c
                if p.exists():
                    return p
        return None

    def hosts(self, registry: str) -> list[RegistryHost]:
        """The endpoints for ``registry``, in the order to try them."""
        if self.config_path:
            return self._from_dirs(registry)
        if self.mirrors:
            return self._from_mirrors(registry)
        return [self._with_headers(_default_host(registry, None, self.default_scheme))]

    def _with_headers(self, h: RegistryHost) -> RegistryHost:
        if not self.headers:
            return h
        merged = {k: tuple(v) for k, v in self.headers.items()}
        for k, v in h.header.items():
            merged[k] = (*merged.get(k, ()), *v)
        return replace(h, header=merged)

    def _from_dirs(self, registry: str) -> list[RegistryHost]:
        d = self.host_dir(registry)
        entries: list[RegistryHost | None] = load_hosts_dir(d) if d is not None else [None]
        out: list[RegistryHost] = []
        for i, e in enumerate(entries):
            last = i == len(entries) - 1
            if last and (e is None or not e.host):
                out.append(_default_host(registry, e, self.default_scheme))
            elif e is not None:
                out.append(e)
        return [self._with_headers(h) for h in out]

    def _from_mirrors(self, registry: str) -> list[RegistryHost]:
        endpoints = list(self.mirrors.get(registry, self.mirrors.get("*", ())))
        out: list[RegistryHost] = []
        for ep in endpoints:
            if "://" not in ep:
                host = ep.split("/", 1)[0]
                ep = f"{'http' if is_localhost(host) else 'https'}://{ep}"
            u = urlsplit(ep)
            if u.scheme not in ("http", "https") or not _NETLOC_RE.match(u.netloc):
                raise InvalidArgumentError(f"invalid mirror endpoint {ep!r} for {registry!r}")
            tls = self.tls.get(u.netloc)
            h = RegistryHost(
                host=u.netloc,
                scheme=u.scheme,
                path=u.path or "/v2",
                capabilities=Capability.PULL | Capability.RESOLVE,
                skip_verify=tls.skip_verify if tls else None,
                ca_certs=tls.ca_certs if tls else (),
                client_pairs=tls.client_pairs if tls else (),
            )
            out.append(h)
        if not any(h.host == registry for h in out):
            upstream = DEFAULT_DOCKER_HOST if registry == "docker.io" else registry
            scheme = "http" if is_localhost(upstream) else "https"
            tls = self.tls.get(upstream)
            out.append(
                RegistryHost(
                    host=upstream,
                    scheme=scheme,
                    capabilities=Capability.PULL | Capability.RESOLVE,
                    skip_verify=tls.skip_verify if tls else None,
                    ca_certs=tls.ca_certs if tls else (),
                    client_pairs=tls.client_pairs if tls else (),
                )
            )
        return [self._with_headers(h) for h in out]
