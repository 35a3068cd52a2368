"""The daemon's config.toml: versions 2 and 3, as containerd reads them.

Top-level sections are typed dataclasses; each plugin's
``[plugins."<type>.<id>"]`` table is decoded into that plugin's own config
dataclass by ``decode()``, which rejects unknown keys and wrong types with an
InvalidArgumentError naming the file, the section and the key.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from arun.errdefs import InvalidArgumentError

log = logging.getLogger(__name__)

T = TypeVar("T")

SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ROOT = "/var/lib/arun"
DEFAULT_STATE = "/run/arun"
DEFAULT_ADDRESS = "/run/arun/arun.sock"
DEFAULT_CONFIG = "/etc/arun/config.toml"


@dataclass
class GRPCConfig:
    address: str = DEFAULT_ADDRESS
    tcp_address: str = ""
    tcp_tls_ca: str = ""
    tcp_tls_cert: str = ""
    tcp_tls_key: str = ""
    uid: int = 0
    gid: int = 0
    max_recv_message_size: int = 16 << 20
    max_send_message_size: int = 16 << 20


@dataclass
class TTRPCConfig:
    # Empty means "<grpc address>.ttrpc", as containerd does.
    address: str = ""
    uid: int = 0
    gid: int = 0


@dataclass
class DebugConfig:
    address: str = ""
    uid: int = 0
    gid: int = 0
    level: str = "info"
    format: str = "text"


@dataclass
class MetricsConfig:
    address: str = ""
    grpc_histogram: bool = False


@dataclass
class CgroupConfig:
    path: str = ""


@dataclass
class Config:
    version: int = 2
    root: str = DEFAULT_ROOT
    state: str = DEFAULT_STATE
    temp: str = ""
    plugin_dir: str = ""
    oom_score: int = 0
    imports: list[str] = field(default_factory=list)
    disabled_plugins: list[str] = field(default_factory=list)
    required_plugins: list[str] = field(default_factory=list)
    grpc: GRPCConfig = field(default_factory=GRPCConfig)
    ttrpc: TTRPCConfig = field(default_factory=TTRPCConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    cgroup: CgroupConfig = field(default_factory=CgroupConfig)
    timeouts: dict[str, str] = field(default_factory=dict)
    proxy_plugins: dict[str, Any] = field(default_factory=dict)
    stream_processors: dict[str, Any] = field(default_factory=dict)
    # Raw plugin tables, keyed by URI; decoded by each plugin's own dataclass.
    plugins: dict[str, Any] = field(default_factory=dict)
    # Where this config came from, for messages.
    source: str = field(default="<defaults>", metadata={"internal": True})

    @property
    def ttrpc_address(self) -> str:
        return self.ttrpc.address or self.grpc.address + ".ttrpc"

    def plugin_table(self, uri: str) -> dict[str, Any]:
        table = self.plugins.get(uri, {})
        if not isinstance(table, dict):
            raise InvalidArgumentError(f"{self.source}: [plugins.{uri!r}] must be a table")
        return table


def load(path: str | Path | None, *, missing_ok: bool = True) -> Config:
    """Read a config file. A missing default file gives the embedded defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return Config(source=str(p))
        raise InvalidArgumentError(f"config file {str(p)!r} does not exist") from None
    except OSError as e:
        raise InvalidArgumentError(f"config file {str(p)!r}: {e.strerror}") from e
    return loads(raw.decode("utf-8", errors="replace"), source=str(p))


def loads(text: str, *, source: str = "<string>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgumentError(f"{source}: invalid TOML: {e}") from None
    version = data.get("version", 1)
    if version not in SUPPORTED_VERSIONS:
        raise InvalidArgumentError(
            f"{source}: unsupported config version {version!r} (supported: 2, 3; "
            "version 1 configs must be migrated: set version = 2)"
        )
    cfg = decode(Config, data, where=source)
    cfg.source = source
    return cfg


def decode(cls: type[T], data: Any, *, where: str) -> T:
    """Build dataclass ``cls`` from a TOML table, strictly.

    Unknown keys and values of the wrong type raise InvalidArgumentError
    naming ``where`` and the key path.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"{where}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            raise InvalidArgumentError(f"{where}: unknown key {key!r}")
        kwargs[key] = _convert(hints[key], value, f"{where}: {key}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return decode(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for a in args:
            if a is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(a, value, where)
            except InvalidArgumentError as e:
                errors.append(e)
        raise errors[0] if errors else InvalidArgumentError(f"{where}: bad value")
    if origin is list:
        if not isinstance(value, list):
            raise InvalidArgumentError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidArgumentError(f"{where}: expected a table, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgumentError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{where}: expected a string, got {value!r}")
        return value
    return value
