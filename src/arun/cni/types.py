"""CNI data: spec versions, plugin results, and the runtime's capability arguments.

Results are parsed from the JSON a plugin prints (versions 0.1.0 to 1.1.0) into
one shape, and can be converted between versions for ``prevResult``, as
libcni's ``types/100`` and ``types/040`` converters do: 0.3.x/0.4.0 results
carry ``"version": "4"|"6"`` on each IP, 1.x ones do not; 0.1.0/0.2.0 results
have ``ip4``/``ip6`` objects instead of lists.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from arun.cni.errors import InvalidConfigError, InvalidResultError

__all__ = [
    "CURRENT_VERSION",
    "DNS",
    "SUPPORTED_VERSIONS",
    "BandWidth",
    "DNSConfig",
    "IPConfig",
    "IPRange",
    "Interface",
    "PortMapping",
    "Result",
    "Route",
    "convert_result",
    "dns_to_json",
    "parse_result",
    "parse_version",
    "result_to_json",
    "route_to_json",
    "version_at_least",
]

JSON = dict[str, Any]
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The highest spec version this implementation speaks (libcni's version.Current()).
CURRENT_VERSION = "1.1.0"
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def parse_version(version: str) -> tuple[int, int, int]:
    """``"1.0.0"`` → ``(1, 0, 0)``; an empty version means 0.1.0, as the spec says."""
    if version == "":
        return (0, 1, 0)
    m = _VERSION.match(version)
    if m is None:
        raise InvalidConfigError(f"invalid CNI version {version!r}")
    return (int(m[1]), int(m[2]), int(m[3]))


def version_at_least(version: str, minimum: str) -> bool:
    return parse_version(version) >= parse_version(minimum)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    mtu: int = 0
    sandbox: str = ""
    socket_path: str = ""
    pci_id: str = ""


@dataclass(frozen=True)
class IPConfig:
    address: IPInterface  # address with prefix, e.g. 10.1.2.3/24
    gateway: IPAddress | None = None
    interface: int | None = None  # index into Result.interfaces

    @property
    def ip(self) -> IPAddress:
        return self.address.ip


@dataclass(frozen=True)
class Route:
    dst: IPInterface  # as written: "0.0.0.0/0", or an address with prefix
    gw: IPAddress | None = None
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: int | None = None
    scope: int | None = None


@dataclass(frozen=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)


@dataclass(frozen=True)
class Result:
    """A plugin's (or a whole chain's) ADD result, version-independent."""

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)
    raw: JSON = field(default_factory=dict, compare=False, repr=False)


def _str(obj: JSON, key: str, where: str) -> str:
    v = obj.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise InvalidResultError(f"{where}: {key!r} must be a string, got {type(v).__name__}")
    return v


def _int(obj: JSON, key: str, where: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidResultError(f"{where}: {key!r} must be an integer, got {type(v).__name__}")
    return v


def _list(obj: JSON, key: str, where: str) -> list[Any]:
    v = obj.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise InvalidResultError(f"{where}: {key!r} must be a list, got {type(v).__name__}")
    return v


def _obj(v: Any, where: str) -> JSON:
    if not isinstance(v, dict):
        raise InvalidResultError(f"{where} must be an object, got {type(v).__name__}")
    return v


def _cidr(text: str, where: str) -> IPInterface:
    try:
        return ipaddress.ip_interface(text)
    except ValueError as exc:
        raise InvalidResultError(f"{where}: invalid CIDR {text!r}") from exc


def _addr(text: str, where: str) -> IPAddress | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise InvalidResultError(f"{where}: invalid IP address {text!r}") from exc


def _strs(obj: JSON, key: str, where: str) -> tuple[str, ...]:
    items = _list(obj, key, where)
    if not all(isinstance(x, str) for x in items):
        raise InvalidResultError(f"{where}: {key!r} must be a list of strings")
    return tuple(items)


def _parse_route(raw: Any, where: str) -> Route:
    r = _obj(raw, where)
    return Route(
        dst=_cidr(_str(r, "dst", where), where),
        gw=_addr(_str(r, "gw", where), where),
        mtu=_int(r, "mtu", where) or 0,
        advmss=_int(r, "advmss", where) or 0,
        priority=_int(r, "priority", where) or 0,
        table=_int(r, "table", where),
        scope=_int(r, "scope", where),
    )


def _parse_dns(raw: Any, where: str) -> DNS:
    if raw is None:
        return DNS()
    d = _obj(raw, where)
    return DNS(
        nameservers=_strs(d, "nameservers", where),
        domain=_str(d, "domain", where),
        search=_strs(d, "search", where),
        options=_strs(d, "options", where),
    )


def parse_result(raw: JSON, default_version: str = "") -> Result:
    """Parse a result document of any supported version.

    ``default_version`` stands in for a missing ``cniVersion`` (libcni's
    fixupResultVersion uses the config's version for that).
    """
    raw = _obj(raw, "result")
    version = _str(raw, "cniVersion", "result") or default_version or "0.1.0"
    try:
        v = parse_version(version)
    except InvalidConfigError as exc:
        raise InvalidResultError(f"result has an invalid cniVersion {version!r}") from exc
    if v > parse_version(CURRENT_VERSION):
        raise InvalidResultError(f"result version {version!r} is newer than {CURRENT_VERSION!r}")
    if v < (0, 3, 0):
        return _parse_result_02x(raw, version)

    interfaces = []
    for i, item in enumerate(_list(raw, "interfaces", "result")):
        where = f"result.interfaces[{i}]"
        o = _obj(item, where)
        name = _str(o, "name", where)
        if not name:
            raise InvalidResultError(f"{where}: missing 'name'")
        interfaces.append(
            Interface(
                name=name,
                mac=_str(o, "mac", where),
                mtu=_int(o, "mtu", where) or 0,
                sandbox=_str(o, "sandbox", where),
                socket_path=_str(o, "socketPath", where),
                pci_id=_str(o, "pciID", where),
            )
        )
    ips = []
    for i, item in enumerate(_list(raw, "ips", "result")):
        where = f"result.ips[{i}]"
        o = _obj(item, where)
        index = _int(o, "interface", where)
        if index is not None and not 0 <= index < len(interfaces):
            raise InvalidResultError(
                f"{where}: interface index {index} out of range ({len(interfaces)} interfaces)"
            )
        address = _str(o, "address", where)
        if not address:
            raise InvalidResultError(f"{where}: missing 'address'")
        ips.append(
            IPConfig(
                address=_cidr(address, where),
                gateway=_addr(_str(o, "gateway", where), where),
                interface=index,
            )
        )
    routes = [_parse_route(r, f"result.routes[{i}]") for i, r in enumerate(_list(raw, "routes", "result"))]
    return Result(
        cni_version=version,
        interfaces=tuple(interfaces),
        ips=tuple(ips),
        routes=tuple(routes),
        dns=_parse_dns(raw.get("dns"), "result.dns"),
        raw=raw,
    )


def _parse_result_02x(raw: JSON, version: str) -> Result:
    ips: list[IPConfig] = []
    routes: list[Route] = []
    for key in ("ip4", "ip6"):
        if raw.get(key) is None:
            continue
        where = f"result.{key}"
        o = _obj(raw[key], where)
        ips.append(
            IPConfig(
                address=_cidr(_str(o, "ip", where), where),
                gateway=_addr(_str(o, "gateway", where), where),
            )
        )
        routes.extend(
            _parse_route(r, f"{where}.routes[{i}]") for i, r in enumerate(_list(o, "routes", where))
        )
    return Result(
        cni_version=version,
        ips=tuple(ips),
        routes=tuple(routes),
        dns=_parse_dns(raw.get("dns"), "result.dns"),
        raw=raw,
    )


def dns_to_json(dns: DNS) -> JSON:
    out: JSON = {}
    if dns.nameservers:
        out["nameservers"] = list(dns.nameservers)
    if dns.domain:
        out["domain"] = dns.domain
    if dns.search:
        out["search"] = list(dns.search)
    if dns.options:
        out["options"] = list(dns.options)
    return out


def route_to_json(r: Route) -> JSON:
    out: JSON = {"dst": str(r.dst)}
    if r.gw is not None:
        out["gw"] = str(r.gw)
    if r.mtu:
        out["mtu"] = r.mtu
    if r.advmss:
        out["advmss"] = r.advmss
    if r.priority:
        out["priority"] = r.priority
    if r.table is not None:
        out["table"] = r.table
    if r.scope is not None:
        out["scope"] = r.scope
    return out


def result_to_json(result: Result, version: str) -> JSON:
    """Render ``result`` as a document of spec ``version``."""
    v = parse_version(version)
    out: JSON = {"cniVersion": version}
    if v < (0, 3, 0):
        for fam, key in ((4, "ip4"), (6, "ip6")):
            ipc = next((i for i in result.ips if i.address.version == fam), None)
            if ipc is None:
                continue
            o: JSON = {"ip": str(ipc.address)}
            if ipc.gateway is not None:
                o["gateway"] = str(ipc.gateway)
            fam_routes = [route_to_json(r) for r in result.routes if r.dst.version == fam]
            if fam_routes:
                o["routes"] = fam_routes
            out[key] = o
    else:
        if result.interfaces:
            ifs = []
            for i in result.interfaces:
                o = {"name": i.name}
                if i.mac:
                    o["mac"] = i.mac
                if i.sandbox:
                    o["sandbox"] = i.sandbox
                if v >= (1, 0, 0):
                    if i.mtu:
                        o["mtu"] = i.mtu
                    if i.socket_path:
                        o["socketPath"] = i.socket_path
                    if i.pci_id:
                        o["pciID"] = i.pci_id
                ifs.append(o)
            out["interfaces"] = ifs
        if result.ips:
            ips = []
            for ipc in result.ips:
                o = {}
                if v < (1, 0, 0):
                    o["version"] = str(ipc.address.version)
                if ipc.interface is not None:
                    o["interface"] = ipc.interface
                o["address"] = str(ipc.address)
                if ipc.gateway is not None:
                    o["gateway"] = str(ipc.gateway)
                ips.append(o)
            out["ips"] = ips
        if result.routes:
            out["routes"] = [route_to_json(r) for r in result.routes]
    dns = dns_to_json(result.dns)
    if dns:
        out["dns"] = dns
    return out


def convert_result(raw: JSON, to_version: str) -> JSON:
    """A result document converted to spec ``to_version`` (identity if already there)."""
    if raw.get("cniVersion") == to_version:
        return raw
    return result_to_json(parse_result(raw), to_version)


# ---------------------------------------------------------------------------------------------
# Capability arguments (CNI CONVENTIONS.md "well-known capabilities"), as the runtime passes
# them in ``runtimeConfig`` to plugins that declare the capability.


@dataclass(frozen=True)
class PortMapping:
    """``portMappings``: one hostPort of a pod (the portmap plugin)."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def to_json(self) -> JSON:
        out: JSON = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out


@dataclass(frozen=True)
class IPRange:
    """``ipRanges``: a range host-local may allocate from."""

    subnet: str
    range_start: str = ""
    range_end: str = ""
    gateway: str = ""

    def to_json(self) -> JSON:
        out: JSON = {"subnet": self.subnet}
        if self.range_start:
            out["rangeStart"] = self.range_start
        if self.range_end:
            out["rangeEnd"] = self.range_end
        if self.gateway:
            out["gateway"] = self.gateway
        return out


@dataclass(frozen=True)
class BandWidth:
    """``bandwidth``: rates in bits per second, bursts in bits (the bandwidth plugin)."""

    ingress_rate: int = 0
    ingress_burst: int = 0
    egress_rate: int = 0
    egress_burst: int = 0

    def to_json(self) -> JSON:
        return {
            "ingressRate": self.ingress_rate,
            "ingressBurst": self.ingress_burst,
            "egressRate": self.egress_rate,
            "egressBurst": self.egress_burst,
        }


@dataclass(frozen=True)
class DNSConfig:
    """``dns``: the pod's DNS settings from the CRI config (servers, searches, options)."""

    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def to_json(self) -> JSON:
        return {"servers": list(self.servers), "searches": list(self.searches), "options": list(self.options)}
