"""Network configuration files, read as libcni and containerd's go-cni read them.

- A conf dir holds ``*.conf``, ``*.conflist`` and ``*.json`` files (not
  subdirectories); they are taken in lexical order of their paths, and the
  first ``max_conf_num`` that form networks are used (go-cni's
  ``WithDefaultConf``; 0 or less means all).
- ``.conflist`` is a network configuration list: ``name``, ``cniVersion`` (or a
  ``cniVersions`` list, the highest supported wins), ``disableCheck``,
  ``disableGC``, ``loadOnlyInlinedPlugins`` and ``plugins``. Since CNI 1.1 a
  list may also take plugins from ``<conf dir>/<name>/*.conf`` unless
  ``loadOnlyInlinedPlugins`` is true.
- ``.conf``/``.json`` is one plugin config; it must have a ``type`` and is
  "upconverted" into a list of one.

Every malformed file raises InvalidConfigError naming the file and the reason;
a conf dir where one of the first ``max_conf_num`` files is broken does not
load at all (go-cni fails the whole load, so the CRI reports not ready).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from arun.cni.errors import CNINotInitializedError, InvalidConfigError
from arun.cni.types import CURRENT_VERSION, JSON, parse_version
from arun.errdefs import InvalidArgumentError

__all__ = [
    "CONF_EXTENSIONS",
    "DEFAULT_CONF_DIR",
    "NetworkConfigList",
    "PluginConfig",
    "conf_files",
    "conflist_from_bytes",
    "conflist_from_conf",
    "conflist_from_file",
    "load_conf_dir",
    "plugin_conf_from_bytes",
    "validate_container_id",
    "validate_interface_name",
    "validate_network_name",
]

DEFAULT_CONF_DIR = "/etc/cni/net.d"
CONF_EXTENSIONS = (".conf", ".conflist", ".json")

# libcni pkg/utils: container ids and network names.
_CNI_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_IFNAME_MAX = 15  # IFNAMSIZ - 1


def validate_network_name(name: str) -> str:
    if not name:
        raise InvalidConfigError("missing network name")
    if not _CNI_NAME.match(name):
        raise InvalidConfigError(f"invalid network name {name!r}: must match {_CNI_NAME.pattern}")
    return name


def validate_container_id(container_id: str) -> str:
    if not container_id:
        raise InvalidArgumentError("missing container id")
    if not _CNI_NAME.match(container_id):
        raise InvalidArgumentError(f"invalid container id {container_id!r}: must match {_CNI_NAME.pattern}")
    return container_id


def validate_interface_name(ifname: str) -> str:
    if not ifname:
        raise InvalidArgumentError("interface name is empty")
    if len(ifname) > _IFNAME_MAX:
        raise InvalidArgumentError(
            f"interface name {ifname!r} is too long (more than {_IFNAME_MAX} characters)"
        )
    if ifname in (".", ".."):
        raise InvalidArgumentError(f"interface name {ifname!r} is . or ..")
    if any(c in ifname for c in "/:") or any(c.isspace() for c in ifname):
        raise InvalidArgumentError(f"interface name {ifname!r} contains / or : or whitespace characters")
    return ifname


@dataclass(frozen=True)
class PluginConfig:
    """One plugin's configuration object, as written in the file."""

    type: str
    conf: JSON = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        v = self.conf.get("name")
        return v if isinstance(v, str) else ""

    @property
    def capabilities(self) -> dict[str, bool]:
        caps = self.conf.get("capabilities")
        if not isinstance(caps, dict):
            return {}
        return {k: v for k, v in caps.items() if isinstance(k, str) and v is True}

    def describe(self) -> str:
        """``type="bridge" name="x"`` like libcni's pluginDescription."""
        out = f"type={self.type!r}"
        if self.name:
            out += f" name={self.name!r}"
        return out


@dataclass(frozen=True)
class NetworkConfigList:
    """A network: an ordered chain of plugins sharing a name and a spec version."""

    name: str
    cni_version: str
    plugins: tuple[PluginConfig, ...]
    disable_check: bool = False
    disable_gc: bool = False
    load_only_inlined_plugins: bool = False
    source: str = ""  # the file it came from, "" if built in memory
    raw: bytes = field(default=b"", compare=False, repr=False)
    #: directories whose contents this list depends on besides ``source`` (plugin subdirs)
    extra_dirs: tuple[str, ...] = field(default=(), compare=False)

    def to_info(self) -> JSON:
        """go-cni's NetworkConfList view (``Status`` verbose info of the CRI)."""
        return {
            "Name": self.name,
            "CNIVersion": self.cni_version,
            "Plugins": [{"Network": _netconf_info(p), "Source": json.dumps(p.conf)} for p in self.plugins],
            "Source": self.raw.decode(errors="replace"),
        }


def _netconf_info(p: PluginConfig) -> JSON:
    ipam = p.conf.get("ipam")
    dns = p.conf.get("dns")
    info: JSON = {
        "type": p.type,
        "ipam": {"type": ipam.get("type", "")} if isinstance(ipam, dict) else {},
        "dns": dns if isinstance(dns, dict) else {},
    }
    if isinstance(p.conf.get("cniVersion"), str):
        info["cniVersion"] = p.conf["cniVersion"]
    if p.name:
        info["name"] = p.name
    if p.capabilities:
        info["capabilities"] = p.capabilities
    return info


def _loads(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidConfigError(f"error parsing {what}: {exc}") from exc


def plugin_conf_from_bytes(data: bytes, what: str = "configuration") -> PluginConfig:
    """One plugin config (a ``.conf`` file or an element of ``plugins``)."""
    obj = _loads(data, what)
    return _plugin_conf(obj, what)


def _plugin_conf(obj: Any, what: str) -> PluginConfig:
    if not isinstance(obj, dict):
        raise InvalidConfigError(f"error parsing {what}: expected a JSON object, got {type(obj).__name__}")
    ptype = obj.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise InvalidConfigError(f"error parsing {what}: missing 'type'")
    if "/" in ptype or ptype in (".", ".."):
        raise InvalidConfigError(f"error parsing {what}: invalid plugin type {ptype!r}")
    caps = obj.get("capabilities")
    if caps is not None and not isinstance(caps, dict):
        raise InvalidConfigError(f"error parsing {what}: 'capabilities' must be an object")
    for key in ("name", "cniVersion"):
        if key in obj and not isinstance(obj[key], str):
            raise InvalidConfigError(f"error parsing {what}: {key!r} must be a string")
    return PluginConfig(type=ptype, conf=obj)


def _read_bool(obj: JSON, key: str, what: str) -> bool:
    v = obj.get(key)
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise InvalidConfigError(f"error parsing {what}: invalid value {v!r} for {key!r}")


def _pick_version(obj: JSON, what: str) -> str:
    version = obj.get("cniVersion", "")
    if not isinstance(version, str):
        raise InvalidConfigError(f"error parsing {what}: invalid cniVersion type {type(version).__name__}")
    current = parse_version(CURRENT_VERSION)
    versions = obj.get("cniVersions")
    if versions is not None:
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise InvalidConfigError(f"error parsing {what}: 'cniVersions' must be a list of strings")
        candidates = [v for v in versions if _parse_version_in(v, what) <= current]
        if version and _parse_version_in(version, what) <= current:
            candidates.append(version)
        if candidates:
            version = str(max(candidates, key=parse_version))
    if not version:
        raise InvalidConfigError(f"error parsing {what}: missing 'cniVersion'")
    if _parse_version_in(version, what) > current:
        raise InvalidConfigError(
            f"error parsing {what}: cniVersion {version!r} is newer than supported {CURRENT_VERSION!r}"
        )
    return version


def _parse_version_in(version: str, what: str) -> tuple[int, int, int]:
    try:
        return parse_version(version)
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"error parsing {what}: {exc.message}") from exc


def conflist_from_bytes(data: bytes, source: str = "", *, load_subdir: bool = False) -> NetworkConfigList:
    """Parse a configuration list document.

    With ``load_subdir`` (files only) plugins are also read from
    ``<dir of source>/<name>/*.conf`` unless the list sets ``loadOnlyInlinedPlugins``.
    """
    what = f"configuration list {source!r}" if source else "configuration list"
    obj = _loads(data, what)
    if not isinstance(obj, dict):
        raise InvalidConfigError(f"error parsing {what}: expected a JSON object")
    name = obj.get("name")
    if name is None:
        raise InvalidConfigError(f"error parsing {what}: no name")
    if not isinstance(name, str):
        raise InvalidConfigError(f"error parsing {what}: invalid name type {type(name).__name__}")
    try:
        validate_network_name(name)
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"error parsing {what}: {exc.message}") from exc
    version = _pick_version(obj, what)
    disable_check = _read_bool(obj, "disableCheck", what)
    disable_gc = _read_bool(obj, "disableGC", what)
    inlined_only = _read_bool(obj, "loadOnlyInlinedPlugins", what)

    plugins: list[PluginConfig] = []
    raw_plugins = obj.get("plugins")
    if raw_plugins is None:
        if inlined_only:
            raise InvalidConfigError(
                f"error parsing {what}: 'loadOnlyInlinedPlugins' is true and no 'plugins' key"
            )
    else:
        if not isinstance(raw_plugins, list):
            raise InvalidConfigError(
                f"error parsing {what}: invalid 'plugins' type {type(raw_plugins).__name__}"
            )
        if not raw_plugins:
            raise InvalidConfigError(f"error parsing {what}: no plugins in list")
        for i, p in enumerate(raw_plugins):
            plugins.append(_plugin_conf(p, f"{what}: plugin {i}"))

    extra: tuple[str, ...] = ()
    if load_subdir and source and not inlined_only:
        subdir = os.path.join(os.path.dirname(source), name)
        extra = (subdir,)
        for path in conf_files(subdir, (".conf",)):
            plugins.append(plugin_conf_from_bytes(_read(path), f"plugin configuration {path!r}"))

    if not plugins:
        raise InvalidConfigError(f"error parsing {what}: no plugin configs found")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=tuple(plugins),
        disable_check=disable_check,
        disable_gc=disable_gc,
        load_only_inlined_plugins=inlined_only,
        source=source,
        raw=data,
        extra_dirs=extra,
    )


def conflist_from_conf(plugin: PluginConfig, source: str = "") -> NetworkConfigList:
    """Upconvert a single plugin config into a list of one, as libcni's ConfListFromConf."""
    what = f"configuration {source!r}" if source else "configuration"
    name = plugin.conf.get("name", "")
    try:
        validate_network_name(name)
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"error parsing {what}: {exc.message}") from exc
    version = plugin.conf.get("cniVersion", "")
    if not version:
        raise InvalidConfigError(f"error parsing {what}: missing 'cniVersion'")
    _pick_version(plugin.conf, what)
    doc = {"name": name, "cniVersion": version, "plugins": [plugin.conf]}
    lst = conflist_from_bytes(json.dumps(doc).encode())
    return NetworkConfigList(
        name=lst.name,
        cni_version=lst.cni_version,
        plugins=lst.plugins,
        source=source,
        raw=lst.raw,
    )


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidConfigError(f"error reading {path!r}: {exc.strerror}") from exc


def conflist_from_file(path: str) -> NetworkConfigList:
    """Load one file: a ``.conflist`` as a list, anything else as a single plugin config."""
    data = _read(path)
    if path.endswith(".conflist"):
        return conflist_from_bytes(data, path, load_subdir=True)
    plugin = plugin_conf_from_bytes(data, f"configuration {path!r}")
    return conflist_from_conf(plugin, path)


def conf_files(conf_dir: str, extensions: Sequence[str] = CONF_EXTENSIONS) -> list[str]:
    """Regular files in ``conf_dir`` with one of ``extensions``, sorted; [] if the dir is missing."""
    try:
        entries = list(os.scandir(conf_dir))
    except FileNotFoundError:
        return []
    except NotADirectoryError as exc:
        raise InvalidConfigError(f"cni config dir {conf_dir!r} is not a directory") from exc
    out = []
    for e in entries:
        if e.is_dir():
            continue
        if os.path.splitext(e.name)[1] in extensions:
            out.append(os.path.join(conf_dir, e.name))
    out.sort()
    return out


def load_conf_dir(conf_dir: str, max_conf_num: int = 1) -> list[NetworkConfigList]:
    """The networks of ``conf_dir``: the first ``max_conf_num`` files (all if ≤ 0).

    Raises CNINotInitializedError when there is no config file, and
    InvalidConfigError when one of the files taken is broken.
    """
    files = conf_files(conf_dir)
    if not files:
        raise CNINotInitializedError(f"no network config found in {conf_dir}")
    networks = []
    for path in files:
        networks.append(conflist_from_file(path))
        if len(networks) == max_conf_num:
            break
    return networks
