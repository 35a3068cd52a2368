"""Operations on one network configuration list: libcni's ``CNIConfig`` for lists.

- ADD runs the plugins in order; each gets the previous plugin's result as
  ``prevResult``; the last result is the network's result and is cached
  (``<cache_dir>/results/<network>-<container>-<ifname>``, libcni's
  ``cniCacheV1`` format) for later DEL and CHECK.
- DEL runs the plugins in reverse order with the cached result as
  ``prevResult`` (spec ≥ 0.4.0), then drops the cache entry. DEL is meant to
  be repeatable; a missing netns is passed as ``CNI_NETNS=""``.
- CHECK (spec ≥ 0.4.0, unless ``disableCheck``) runs the plugins in order
  with the cached result.
- STATUS and GC exist from spec 1.1.0 on.

Each plugin's stdin is its own config object with the list's ``name`` and
``cniVersion`` injected, plus ``runtimeConfig`` holding those capability
arguments the plugin declares in ``capabilities`` (portMappings, bandwidth,
dns, ...).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arun.cni.conf import (
    NetworkConfigList,
    PluginConfig,
    validate_container_id,
    validate_interface_name,
    validate_network_name,
)
from arun.cni.errors import InvalidResultError, PluginFailedPreconditionError
from arun.cni.invoke import DEFAULT_BIN_DIRS, Args, Executor, PluginExecutor, decode_result, find_plugin
from arun.cni.invoke import version_info as _version_info
from arun.cni.types import JSON, Result, convert_result, parse_result, version_at_least
from arun.errdefs import ArunError, NotFoundError, UnimplementedError

__all__ = ["CNI", "DEFAULT_CACHE_DIR", "CachedAttachment", "ResultCache", "RuntimeConf"]

#: libcni's default; host-local keeps its leases next to it, in /var/lib/cni/networks.
DEFAULT_CACHE_DIR = "/var/lib/cni"
CACHE_KIND = "cniCacheV1"


@dataclass(frozen=True)
class RuntimeConf:
    """The per-attachment arguments of one invocation (libcni's RuntimeConf)."""

    container_id: str
    netns: str
    ifname: str
    args: tuple[tuple[str, str], ...] = ()
    capability_args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CachedAttachment:
    container_id: str
    network: str
    ifname: str
    netns: str
    args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]
    config: bytes
    result: JSON | None


class ResultCache:
    """ADD results on disk, as libcni lays them out, so DEL and CHECK get ``prevResult``."""

    def __init__(self, cache_dir: str = DEFAULT_CACHE_DIR) -> None:
        self.cache_dir = cache_dir

    @property
    def results_dir(self) -> str:
        return os.path.join(self.cache_dir, "results")

    def path(self, network: str, rt: RuntimeConf) -> str:
        return os.path.join(self.results_dir, f"{network}-{rt.container_id}-{rt.ifname}")

    def write(self, netlist: NetworkConfigList, rt: RuntimeConf, result: JSON) -> None:
        doc: JSON = {
            "kind": CACHE_KIND,
            "containerId": rt.container_id,
            "config": base64.b64encode(netlist.raw).decode(),
            "ifName": rt.ifname,
            "networkName": netlist.name,
        }
        if rt.netns:
            doc["netns"] = rt.netns
        if rt.args:
            doc["cniArgs"] = [list(kv) for kv in rt.args]
        if rt.capability_args:
            doc["capabilityArgs"] = dict(rt.capability_args)
        doc["result"] = result
        os.makedirs(self.results_dir, mode=0o700, exist_ok=True)
        target = self.path(netlist.name, rt)
        fd, tmp = tempfile.mkstemp(dir=self.results_dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _load(self, path: str) -> JSON | None:
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("kind") != CACHE_KIND:
            return None
        return doc

    def read_result(self, netlist: NetworkConfigList, rt: RuntimeConf) -> JSON | None:
        """The cached result converted to the list's version, or None if there is none usable."""
        doc = self._load(self.path(netlist.name, rt))
        if doc is None or not isinstance(doc.get("result"), dict):
            return None
        try:
            return convert_result(doc["result"], netlist.cni_version)
        except InvalidResultError:
            return None

    def delete(self, network: str, rt: RuntimeConf) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(network, rt))

    def attachments(self, container_id: str = "") -> list[CachedAttachment]:
        try:
            names = sorted(os.listdir(self.results_dir))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith(".tmp-"):
                continue
            if container_id and f"-{container_id}-" not in name:
                continue
            doc = self._load(os.path.join(self.results_dir, name))
            if doc is None:
                continue
            cid, net, ifname = doc.get("containerId"), doc.get("networkName"), doc.get("ifName")
            if not (
                isinstance(cid, str) and isinstance(net, str) and isinstance(ifname, str) and net and ifname
            ):
                continue
            if container_id and cid != container_id:
                continue
            raw_args = doc.get("cniArgs") or []
            args = tuple((str(kv[0]), str(kv[1])) for kv in raw_args if isinstance(kv, list) and len(kv) == 2)
            caps = doc.get("capabilityArgs") or {}
            try:
                config = base64.b64decode(doc.get("config") or "")
            except ValueError:
                config = b""
            result = doc.get("result")
            out.append(
                CachedAttachment(
                    container_id=cid,
                    network=net,
                    ifname=ifname,
                    netns=str(doc.get("netns") or ""),
                    args=args,
                    capability_args=caps if isinstance(caps, dict) else {},
                    config=config,
                    result=result if isinstance(result, dict) else None,
                )
            )
        return out


def build_plugin_config(
    netlist: NetworkConfigList,
    plugin: PluginConfig,
    prev_result: JSON | None,
    rt: RuntimeConf | None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The stdin document of one plugin invocation (libcni's buildOneConfig)."""
    conf = dict(plugin.conf)
    conf["name"] = netlist.name
    conf["cniVersion"] = netlist.cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    if rt is not None:
        rc = {cap: rt.capability_args[cap] for cap in plugin.capabilities if cap in rt.capability_args}
        if rc:
            conf["runtimeConfig"] = rc
    if extra:
        conf.update(extra)
    return json.dumps(conf).encode()


class CNI:
    """Runs network lists against plugins found in ``bin_dirs``."""

    def __init__(
        self,
        bin_dirs: Sequence[str] = DEFAULT_BIN_DIRS,
        cache_dir: str = DEFAULT_CACHE_DIR,
        executor: Executor | None = None,
    ) -> None:
        self.bin_dirs = tuple(bin_dirs)
        self.cache = ResultCache(cache_dir)
        self.executor: Executor = executor if executor is not None else PluginExecutor()

    def _args(self, command: str, rt: RuntimeConf | None) -> Args:
        if rt is None:
            return Args(command=command, path=self.bin_dirs)
        return Args(
            command=command,
            container_id=rt.container_id,
            netns=rt.netns,
            ifname=rt.ifname,
            plugin_args=rt.args,
            path=self.bin_dirs,
        )

    async def _run(
        self,
        command: str,
        netlist: NetworkConfigList,
        plugin: PluginConfig,
        prev: JSON | None,
        rt: RuntimeConf | None,
        extra: Mapping[str, Any] | None = None,
    ) -> bytes:
        what = f"plugin {plugin.describe()} failed ({command.lower()})"
        path = find_plugin(plugin.type, self.bin_dirs)
        stdin = build_plugin_config(netlist, plugin, prev, rt, extra)
        return await self.executor.exec_plugin(path, stdin, self._args(command, rt), what)

    async def add_network_list(self, netlist: NetworkConfigList, rt: RuntimeConf) -> Result:
        """ADD every plugin in order; cache and return the last result."""
        validate_container_id(rt.container_id)
        validate_network_name(netlist.name)
        validate_interface_name(rt.ifname)
        prev: JSON | None = None
        result: Result | None = None
        for plugin in netlist.plugins:
            out = await self._run("ADD", netlist, plugin, prev, rt)
            what = f"plugin {plugin.describe()} failed (add)"
            prev, result = decode_result(out, netlist.cni_version, what)
        assert result is not None and prev is not None  # a list has at least one plugin
        self.cache.write(netlist, rt, prev)
        return result

    async def del_network_list(self, netlist: NetworkConfigList, rt: RuntimeConf) -> None:
        """DEL every plugin in reverse order, then forget the cached result.

        Unlike libcni, a failing plugin does not stop the others: each still
        releases what it holds (an undo after a missing binary must not leak
        the bridge's veth and IP). The first error is raised afterwards, the
        others are attached as notes, and the cache entry is kept for a retry.
        """
        cached = (
            self.cache.read_result(netlist, rt) if version_at_least(netlist.cni_version, "0.4.0") else None
        )
        errors: list[Exception] = []
        for plugin in reversed(netlist.plugins):
            try:
                await self._run("DEL", netlist, plugin, cached, rt)
            except ArunError as exc:
                errors.append(exc)
        if errors:
            for other in errors[1:]:
                errors[0].add_note(f"also failed: {other}")
            raise errors[0]
        self.cache.delete(netlist.name, rt)

    async def check_network_list(self, netlist: NetworkConfigList, rt: RuntimeConf) -> None:
        """CHECK every plugin in order against the cached ADD result."""
        if not version_at_least(netlist.cni_version, "0.4.0"):
            raise UnimplementedError(
                f"network {netlist.name!r}: configuration version {netlist.cni_version!r} "
                "does not support the CHECK command"
            )
        if netlist.disable_check:
            return
        cached = self.cache.read_result(netlist, rt)
        if cached is None:
            raise NotFoundError(
                f"network {netlist.name!r}: no cached result for container {rt.container_id!r} "
                f"interface {rt.ifname!r} (never added, or deleted)"
            )
        for plugin in netlist.plugins:
            await self._run("CHECK", netlist, plugin, cached, rt)

    def cached_result(self, netlist: NetworkConfigList, rt: RuntimeConf) -> Result | None:
        raw = self.cache.read_result(netlist, rt)
        return parse_result(raw) if raw is not None else None

    async def status_network_list(self, netlist: NetworkConfigList) -> None:
        """STATUS every plugin (spec ≥ 1.1.0; a no-op before). Raises the first plugin error."""
        if not version_at_least(netlist.cni_version, "1.1.0"):
            return
        for plugin in netlist.plugins:
            await self._run("STATUS", netlist, plugin, None, None)

    async def gc_network_list(self, netlist: NetworkConfigList, valid: Iterable[tuple[str, str]]) -> None:
        """Delete cached attachments of this network that are not ``valid`` (container id, ifname)
        pairs, then (spec ≥ 1.1.0) send GC with the valid attachments to every plugin."""
        if netlist.disable_gc:
            return
        keep = set(valid)
        errors: list[Exception] = []
        for att in self.cache.attachments():
            if att.network != netlist.name or (att.container_id, att.ifname) in keep:
                continue
            rt = RuntimeConf(
                container_id=att.container_id,
                netns=att.netns,
                ifname=att.ifname,
                args=att.args,
                capability_args=att.capability_args,
            )
            try:
                await self.del_network_list(netlist, rt)
            except Exception as exc:
                exc.add_note(f"deleting stale attachment {att.container_id!r} {att.ifname!r}")
                errors.append(exc)
        if version_at_least(netlist.cni_version, "1.1.0"):
            attachments = [{"containerID": c, "ifname": i} for c, i in sorted(keep)]
            extra = {"cni.dev/valid-attachments": attachments, "cni.dev/attachments": attachments}
            for plugin in netlist.plugins:
                try:
                    await self._run("GC", netlist, plugin, None, None, extra)
                except Exception as exc:
                    errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup(f"garbage collection of network {netlist.name!r} failed", errors)

    async def version_info(self, plugin_type: str) -> list[str]:
        return await _version_info(self.executor, find_plugin(plugin_type, self.bin_dirs))

    async def validate_network_list(self, netlist: NetworkConfigList) -> list[str]:
        """Every plugin exists and supports the list's version; returns the declared capabilities."""
        caps: set[str] = set()
        for plugin in netlist.plugins:
            versions = await self.version_info(plugin.type)
            if netlist.cni_version not in versions:
                raise PluginFailedPreconditionError(
                    f"plugin {plugin.describe()} does not support config version {netlist.cni_version!r} "
                    f"(supports {', '.join(versions)})",
                    plugin=plugin.type,
                    command="VERSION",
                )
            caps.update(plugin.capabilities)
        return sorted(caps)
