"""Pod networking for the CRI plugin: what containerd's CRI does with go-cni.

``PodNetwork`` owns the CNI configuration of one conf dir and attaches pod
sandboxes to it:

- **Config**: the first ``max_conf_num`` files of ``conf_dir`` (lexical
  order) become networks ``eth0``, ``eth1``, ...; with ``loopback="cni"``
  (containerd's default) a built-in ``cni-loopback`` network (plugin
  ``loopback``, interface ``lo``) comes first. The conf dir is re-read
  whenever its relevant files change (stat polling on every call, so no
  watcher task is needed and an edit is seen by the very next request).
- **status()**: NetworkReady, or not ready with reason ``NetworkPluginNotReady``
  and a message saying why ("cni plugin not initialized: no network config
  found in ..." while the conf dir is empty), as containerd reports it.
- **setup()**: ADD the pod to every network (concurrently, as go-cni's
  ``Setup``; or one after the other with ``setup_serially``). CNI_ARGS carry
  ``K8S_POD_NAMESPACE``, ``K8S_POD_NAME``, ``K8S_POD_INFRA_CONTAINER_ID``,
  ``K8S_POD_UID`` and ``IgnoreUnknown=1``; ``runtimeConfig`` carries port
  mappings, bandwidth, DNS, cgroup path and the pod annotations to plugins
  that declare those capabilities. Any failure (a plugin, a missing binary, no
  IP on the default interface, cancellation) DELs every network again before
  the error propagates.
- **teardown()**: DEL from every network in reverse order; idempotent; a netns
  that is already gone is passed as ``CNI_NETNS=""`` so plugins clean up what
  they can. If the conf dir no longer has a config, the configs cached at ADD
  time are used, so a pod can always be torn down.
- **create()/destroy()**: the transactional pair the sandbox code wants:
  a fresh netns plus setup (nothing left behind on failure), and teardown plus
  netns removal.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from arun import netns as netnslib
from arun.cni.conf import (
    CONF_EXTENSIONS,
    DEFAULT_CONF_DIR,
    NetworkConfigList,
    conflist_from_bytes,
    load_conf_dir,
)
from arun.cni.errors import CNINotInitializedError, InvalidResultError, PluginError
from arun.cni.invoke import DEFAULT_BIN_DIRS, DEFAULT_PLUGIN_TIMEOUT, Executor, PluginExecutor
from arun.cni.network import CNI, DEFAULT_CACHE_DIR, RuntimeConf
from arun.cni.types import (
    DNS,
    BandWidth,
    DNSConfig,
    IPConfig,
    PortMapping,
    Result,
    Route,
    dns_to_json,
    parse_result,
    route_to_json,
    version_at_least,
)
from arun.errdefs import ArunError, InvalidArgumentError

__all__ = [
    "LOOPBACK_NETWORK",
    "NOT_READY_REASON",
    "POD_ANNOTATIONS_CAPABILITY",
    "InterfaceConfig",
    "NetworkStatus",
    "PodNetwork",
    "PodNetworkHandle",
    "PodNetworkRequest",
    "PodNetworkResult",
]

log = logging.getLogger(__name__)

#: containerd's CRI passes the pod annotations under this capability (annotations.PodAnnotations).
POD_ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations"
#: The reason of a false NetworkReady condition, as containerd's CRI words it.
NOT_READY_REASON = "NetworkPluginNotReady"
#: go-cni's WithLoNetwork: the loopback plugin as a network of its own, on interface "lo".
LOOPBACK_NETWORK = conflist_from_bytes(
    b'{"cniVersion": "0.3.1", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}'
)
LOOPBACK_IFNAME = "lo"

LoopbackMode = Literal["cni", "internal", "none"]


@dataclass(frozen=True)
class PodNetworkRequest:
    """What the CRI knows about a pod that matters to CNI (from its PodSandboxConfig)."""

    sandbox_id: str
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    port_mappings: Sequence[PortMapping] = ()
    dns: DNSConfig | None = None
    bandwidth: BandWidth | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""
    #: further well-known capabilities (``ips``, ``mac``, ``ipRanges``, ...), JSON-ready values
    extra_capabilities: Mapping[str, Any] = field(default_factory=dict)

    def cni_args(self) -> tuple[tuple[str, str], ...]:
        """CNI_ARGS, the labels containerd's toCNILabels sets."""
        return (
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", self.pod_namespace),
            ("K8S_POD_NAME", self.pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", self.sandbox_id),
            ("K8S_POD_UID", self.pod_uid),
        )

    def capability_args(self) -> dict[str, Any]:
        """runtimeConfig candidates, as containerd's cniNamespaceOpts builds them."""
        caps: dict[str, Any] = {POD_ANNOTATIONS_CAPABILITY: dict(self.annotations)}
        ports = [
            PortMapping(p.host_port, p.container_port, p.protocol.lower() or "tcp", p.host_ip).to_json()
            for p in self.port_mappings
            if p.host_port > 0
        ]
        if ports:
            caps["portMappings"] = ports
        if self.bandwidth is not None:
            caps["bandwidth"] = self.bandwidth.to_json()
        if self.dns is not None:
            caps["dns"] = self.dns.to_json()
        if self.cgroup_parent:
            caps["cgroupPath"] = self.cgroup_parent
        caps.update(self.extra_capabilities)
        return caps


@dataclass(frozen=True)
class InterfaceConfig:
    """One interface of the pod with the addresses the plugins gave it (go-cni's Config)."""

    ip_configs: tuple[IPConfig, ...] = ()
    mac: str = ""
    sandbox: str = ""
    pci_id: str = ""
    socket_path: str = ""


@dataclass(frozen=True)
class PodNetworkResult:
    """The outcome of setup() over all networks (go-cni's Result)."""

    interfaces: Mapping[str, InterfaceConfig]
    dns: tuple[DNS, ...]
    routes: tuple[Route, ...]
    raw: tuple[Result, ...]  # one per network, in network order
    default_interface: str = "eth0"

    def ips(self, interface: str | None = None) -> list[str]:
        iface = self.interfaces.get(interface or self.default_interface)
        return [str(c.ip) for c in iface.ip_configs] if iface else []

    def pod_ips(self, preference: str = "ipv4") -> tuple[str, list[str]]:
        """(primary IP, additional IPs) of the default interface, as containerd's selectPodIPs.

        ``preference`` is containerd's ``ip_pref``: "ipv4" (default), "ipv6" or "cni"
        (the plugins' order).
        """
        ips = self.ips()
        if not ips:
            return "", []
        if len(ips) == 1 or preference == "cni":
            return ips[0], ips[1:]
        want = 6 if preference == "ipv6" else 4
        for i, ip in enumerate(ips):
            if ipaddress.ip_address(ip).version == want:
                return ip, ips[:i] + ips[i + 1 :]
        return ips[0], ips[1:]

    def to_json(self) -> dict[str, Any]:
        """go-cni's Result as Go marshals it: what containerd stores with a sandbox and shows
        as ``cniResult`` in the verbose PodSandboxStatus."""
        return {
            "Interfaces": {
                name: {
                    "IPConfigs": [
                        {"IP": str(c.ip), "Gateway": str(c.gateway) if c.gateway is not None else None}
                        for c in cfg.ip_configs
                    ]
                    or None,
                    "Mac": cfg.mac,
                    "Sandbox": cfg.sandbox,
                    "PciID": cfg.pci_id,
                    "SocketPath": cfg.socket_path,
                }
                for name, cfg in self.interfaces.items()
            },
            "DNS": [dns_to_json(d) for d in self.dns],
            "Routes": [route_to_json(r) for r in self.routes],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], default_interface: str = "eth0") -> PodNetworkResult:
        """The inverse of to_json (``raw`` is not part of it and comes back empty)."""
        try:
            interfaces = {}
            for name, cfg in (doc.get("Interfaces") or {}).items():
                ips = []
                for c in cfg.get("IPConfigs") or ():
                    ip = ipaddress.ip_address(c["IP"])
                    gw = ipaddress.ip_address(c["Gateway"]) if c.get("Gateway") else None
                    ips.append(IPConfig(address=ipaddress.ip_interface(str(ip)), gateway=gw))
                interfaces[name] = InterfaceConfig(
                    ip_configs=tuple(ips),
                    mac=cfg.get("Mac", ""),
                    sandbox=cfg.get("Sandbox", ""),
                    pci_id=cfg.get("PciID", ""),
                    socket_path=cfg.get("SocketPath", ""),
                )
            parsed = parse_result(
                {"cniVersion": "1.0.0", "routes": doc.get("Routes") or [], "dns": None}, "1.0.0"
            )
            dns = tuple(
                parse_result({"cniVersion": "1.0.0", "dns": d}, "1.0.0").dns for d in doc.get("DNS") or ()
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidResultError(f"invalid stored pod network result: {exc}") from exc
        return cls(
            interfaces=interfaces,
            dns=dns,
            routes=parsed.routes,
            raw=(),
            default_interface=default_interface,
        )


@dataclass(frozen=True)
class NetworkStatus:
    ready: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class PodNetworkHandle:
    """What create() made: the namespace (give ``netns.path`` to the OCI spec) and the result."""

    netns: netnslib.NetNS
    result: PodNetworkResult


@dataclass(frozen=True)
class _Network:
    config: NetworkConfigList
    ifname: str


_Fingerprint = tuple[tuple[str, int, int, int, int], ...]


class PodNetwork:
    """CNI for pods. All methods are safe to call concurrently for different sandboxes;
    calls for the same sandbox are serialised (the CNI spec forbids parallel
    operations on one container)."""

    def __init__(
        self,
        *,
        conf_dir: str = DEFAULT_CONF_DIR,
        bin_dirs: Sequence[str] = DEFAULT_BIN_DIRS,
        max_conf_num: int = 1,
        cache_dir: str = DEFAULT_CACHE_DIR,
        netns_dir: str = netnslib.DEFAULT_NETNS_DIR,
        ifname_prefix: str = "eth",
        loopback: LoopbackMode = "cni",
        setup_serially: bool = False,
        plugin_timeout: float = DEFAULT_PLUGIN_TIMEOUT,
        executor: Executor | None = None,
    ) -> None:
        if loopback not in ("cni", "internal", "none"):
            raise InvalidArgumentError(f"loopback must be 'cni', 'internal' or 'none', not {loopback!r}")
        self.conf_dir = conf_dir
        self.max_conf_num = max_conf_num
        self.netns_dir = netns_dir
        self.ifname_prefix = ifname_prefix
        self.loopback: LoopbackMode = loopback
        self.setup_serially = setup_serially
        self.cni = CNI(
            bin_dirs, cache_dir, executor if executor is not None else PluginExecutor(plugin_timeout)
        )
        # containerd: a pod needs the loopback network plus one real one, unless lo is handled internally.
        self.min_networks = 2 if loopback == "cni" else 1
        self._networks: tuple[_Network, ...] = ()
        self._load_error: ArunError | None = None
        self._fingerprint: _Fingerprint | None = None
        self._watch_dirs: tuple[str, ...] = ()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    # -- configuration -------------------------------------------------------------------------

    @property
    def default_interface(self) -> str:
        return f"{self.ifname_prefix}0"

    def _scan(self) -> _Fingerprint:
        entries: list[tuple[str, int, int, int, int]] = []
        for d, exts in [(self.conf_dir, CONF_EXTENSIONS)] + [(w, (".conf",)) for w in self._watch_dirs]:
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if os.path.splitext(e.name)[1] not in exts:
                            continue
                        try:
                            st = e.stat()
                        except OSError:
                            continue
                        entries.append((e.path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            except OSError:
                entries.append((d, -1, -1, -1, -1))
        entries.sort()
        return tuple(entries)

    def reload(self, *, force: bool = False) -> None:
        """Re-read the conf dir if anything relevant in it changed since the last load."""
        fp = self._scan()
        if fp == self._fingerprint and not force:
            return
        networks: list[_Network] = []
        if self.loopback == "cni":
            networks.append(_Network(LOOPBACK_NETWORK, LOOPBACK_IFNAME))
        try:
            lists = load_conf_dir(self.conf_dir, self.max_conf_num)
        except ArunError as exc:
            if self._load_error is None or self._load_error.message != exc.message:
                log.warning("failed to load cni config from %s: %s", self.conf_dir, exc.message)
            self._networks = ()
            self._load_error = exc
            self._watch_dirs = ()
        else:
            networks.extend(_Network(c, f"{self.ifname_prefix}{i}") for i, c in enumerate(lists))
            self._networks = tuple(networks)
            self._load_error = None
            self._watch_dirs = tuple(d for c in lists for d in c.extra_dirs)
            log.info("loaded cni config from %s: networks %s", self.conf_dir, [c.name for c in lists])
        # Rescan so that the fingerprint covers the plugin subdirectories just learnt.
        self._fingerprint = self._scan() if self._watch_dirs else fp

    @property
    def networks(self) -> tuple[NetworkConfigList, ...]:
        self.reload()
        return tuple(n.config for n in self._networks)

    def last_load_status(self) -> str:
        """Return "OK" or why the last load failed (the CRI's verbose ``lastCNILoadStatus``)."""
        self.reload()
        return "OK" if self._load_error is None else self._load_error.message

    def config_info(self) -> dict[str, Any]:
        """go-cni's GetConfig(), for the CRI's verbose ``cniconfig``."""
        self.reload()
        return {
            "PluginDirs": list(self.cni.bin_dirs),
            "PluginConfDir": self.conf_dir,
            "PluginMaxConfNum": self.max_conf_num,
            "Prefix": self.ifname_prefix,
            "Networks": [{"Config": n.config.to_info(), "IFName": n.ifname} for n in self._networks],
        }

    def _not_initialized(self) -> CNINotInitializedError:
        msg = "cni plugin not initialized"
        if self._load_error is not None:
            msg += f": {self._load_error.message}"
        return CNINotInitializedError(msg)

    def _ready_networks(self) -> tuple[_Network, ...]:
        self.reload()
        if len(self._networks) < self.min_networks:
            raise self._not_initialized() from self._load_error
        return self._networks

    async def status(self) -> NetworkStatus:
        """The CRI NetworkReady condition. Runs the plugins' STATUS for spec ≥ 1.1.0 networks."""
        try:
            networks = self._ready_networks()
            for n in networks:
                await self.cni.status_network_list(n.config)
        except ArunError as exc:
            return NetworkStatus(False, NOT_READY_REASON, f"Network plugin returns error: {exc.message}")
        return NetworkStatus(True)

    # -- per-sandbox operations ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _sandbox_lock(self, sandbox_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(sandbox_id, (asyncio.Lock(), 0))
        self._locks[sandbox_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[sandbox_id]
            if users == 1:
                del self._locks[sandbox_id]
            else:
                self._locks[sandbox_id] = (lock, users - 1)

    def _rt(self, req: PodNetworkRequest, netns_path: str, ifname: str) -> RuntimeConf:
        return RuntimeConf(
            container_id=req.sandbox_id,
            netns=netns_path,
            ifname=ifname,
            args=req.cni_args(),
            capability_args=req.capability_args(),
        )

    async def setup(self, req: PodNetworkRequest, netns_path: str) -> PodNetworkResult:
        """Attach the pod in ``netns_path`` to every network; all or nothing."""
        networks = self._ready_networks()
        if not netns_path:
            raise InvalidArgumentError(f"sandbox {req.sandbox_id!r}: setup needs a network namespace path")
        async with self._sandbox_lock(req.sandbox_id):
            try:
                if self.loopback == "internal":
                    await asyncio.to_thread(netnslib.set_loopback_up, netns_path)
                results = await self._attach(networks, req, netns_path)
                return self._make_result(req, networks, results)
            except BaseException as exc:
                await asyncio.shield(self._undo(networks, req, netns_path, exc))
                raise

    async def _attach(
        self, networks: Sequence[_Network], req: PodNetworkRequest, netns_path: str
    ) -> list[Result]:
        if self.setup_serially:
            return [
                await self.cni.add_network_list(n.config, self._rt(req, netns_path, n.ifname))
                for n in networks
            ]
        # Let every ADD finish (killing a plugin half-way would leave more to clean up),
        # then report the first failure.
        outcomes = await asyncio.gather(
            *(self.cni.add_network_list(n.config, self._rt(req, netns_path, n.ifname)) for n in networks),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            first = failures[0]
            for other in failures[1:]:
                first.add_note(f"also failed: {other}")
            raise first
        return [o for o in outcomes if isinstance(o, Result)]

    async def _undo(
        self, networks: Sequence[_Network], req: PodNetworkRequest, netns_path: str, cause: BaseException
    ) -> None:
        errors = await self._delete(networks, req, netns_path)
        for err in errors:
            log.warning("undo of network setup for sandbox %r failed: %s", req.sandbox_id, err)
            cause.add_note(f"cleanup after the failed setup also failed: {err}")

    def _make_result(
        self, req: PodNetworkRequest, networks: Sequence[_Network], results: Sequence[Result]
    ) -> PodNetworkResult:
        default = self.default_interface
        ifaces: dict[str, dict[str, Any]] = {default: {"ips": []}}
        dns: list[DNS] = []
        routes: list[Route] = []
        for res in results:
            for i in res.interfaces:
                ifaces[i.name] = {
                    "ips": [],
                    "mac": i.mac,
                    "sandbox": i.sandbox,
                    "pci_id": i.pci_id,
                    "socket_path": i.socket_path,
                }
            for ipc in res.ips:
                name = res.interfaces[ipc.interface].name if ipc.interface is not None else default
                ifaces[name]["ips"].append(ipc)
            dns.append(res.dns)
            routes.extend(res.routes)
        if not ifaces[default]["ips"]:
            raise InvalidResultError(
                f"failed to find network info for sandbox {req.sandbox_id!r}: "
                f"no IP address on the default interface {default!r}"
            )
        interfaces = {
            name: InterfaceConfig(
                ip_configs=tuple(v["ips"]),
                mac=v.get("mac", ""),
                sandbox=v.get("sandbox", ""),
                pci_id=v.get("pci_id", ""),
                socket_path=v.get("socket_path", ""),
            )
            for name, v in ifaces.items()
        }
        return PodNetworkResult(
            interfaces=interfaces,
            dns=tuple(dns),
            routes=tuple(routes),
            raw=tuple(results),
            default_interface=default,
        )

    async def _delete(
        self, networks: Sequence[_Network], req: PodNetworkRequest, netns_path: str
    ) -> list[Exception]:
        """DEL from every network in reverse order; return the errors that matter."""
        errors: list[Exception] = []
        for n in reversed(networks):
            try:
                await self.cni.del_network_list(n.config, self._rt(req, netns_path, n.ifname))
            except PluginError as exc:
                # go-cni's Remove tolerates these: the resource is already gone.
                text = str(exc)
                if "not found" in text or (not netns_path and "no such file or directory" in text):
                    continue
                errors.append(exc)
            except ArunError as exc:
                errors.append(exc)
        return errors

    def _teardown_networks(self, sandbox_id: str) -> tuple[_Network, ...]:
        self.reload()
        if len(self._networks) >= self.min_networks:
            return self._networks
        # No usable config now: fall back to the configs recorded when the pod was added.
        cached = []
        for att in self.cni.cache.attachments(sandbox_id):
            try:
                cfg = conflist_from_bytes(att.config)
            except ArunError:
                continue
            cached.append(_Network(cfg, att.ifname))
        # The loopback network first, the others in interface order: the order of setup.
        cached.sort(key=lambda n: (n.ifname != LOOPBACK_IFNAME, n.ifname))
        return tuple(cached)

    async def teardown(self, req: PodNetworkRequest, netns_path: str) -> None:
        """Detach the pod from every network. Idempotent; ``netns_path`` may be gone or ""."""
        path = netns_path if netns_path and netnslib.is_netns(netns_path) else ""
        networks = self._teardown_networks(req.sandbox_id)
        async with self._sandbox_lock(req.sandbox_id):
            errors = await self._delete(networks, req, path)
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(f"also failed: {other}")
            raise first

    async def check(self, req: PodNetworkRequest, netns_path: str) -> None:
        """CHECK every network that supports it (spec ≥ 0.4.0; the 0.3.1 loopback does not)."""
        networks = self._ready_networks()
        async with self._sandbox_lock(req.sandbox_id):
            for n in networks:
                if not version_at_least(n.config.cni_version, "0.4.0"):
                    continue
                await self.cni.check_network_list(n.config, self._rt(req, netns_path, n.ifname))

    def cached_result(self, sandbox_id: str) -> PodNetworkResult | None:
        """The result recorded at setup, rebuilt from the CNI cache (e.g. after a daemon restart)."""
        networks = self._teardown_networks(sandbox_id)
        results = []
        for n in networks:
            rt = RuntimeConf(container_id=sandbox_id, netns="", ifname=n.ifname)
            raw = self.cni.cache.read_result(n.config, rt)
            if raw is None:
                return None
            results.append(parse_result(raw))
        if not results:
            return None
        try:
            return self._make_result(PodNetworkRequest(sandbox_id), networks, results)
        except InvalidResultError:
            return None

    # -- namespace + network, as one transaction -----------------------------------------------------

    async def create(self, req: PodNetworkRequest) -> PodNetworkHandle:
        """A new netns under ``netns_dir`` attached to every network; nothing is left on failure."""
        self._ready_networks()
        ns = await netnslib.create(self.netns_dir)
        try:
            result = await self.setup(req, ns.path)
        except BaseException:
            await asyncio.shield(ns.remove())
            raise
        return PodNetworkHandle(ns, result)

    async def destroy(self, req: PodNetworkRequest, netns_path: str) -> None:
        """Teardown, then remove the namespace. Idempotent.

        If teardown fails the namespace is kept (as containerd does), so that a
        retry can still DEL with it; the error propagates.
        """
        await self.teardown(req, netns_path)
        if netns_path:
            await netnslib.remove(netns_path)

    async def gc(self, valid_sandbox_ids: Iterable[str]) -> None:
        """DEL cached attachments of sandboxes not in ``valid_sandbox_ids``, then GC (spec ≥ 1.1.0)."""
        valid = set(valid_sandbox_ids)
        for n in self._ready_networks():
            await self.cni.gc_network_list(n.config, [(sid, n.ifname) for sid in valid])
