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
class ArunConfig:
    """Settings of arun itself, with no containerd counterpart."""

    # Run the daemon's event loop on uvloop (faster); false uses asyncio's default loop.
    uvloop: bool = True
    # Seconds a SIGTERM waits for requests in flight before cancelling them.
    shutdown_grace: float = 10.0


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
    arun: ArunConfig = field(default_factory=ArunConfig)
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


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain TOML-ready data (internal fields left out)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.metadata.get("internal")
        }
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def dumps(data: dict[str, Any]) -> str:
    """TOML text for ``data`` (tables of scalars, lists of scalars and nested tables)."""
    lines: list[str] = []
    _dump_table(lines, [], data)
    return "\n".join(lines).rstrip("\n") + "\n"


def _dump_table(lines: list[str], path: list[str], table: dict[str, Any]) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    if path and (scalars or not tables):
        lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
    for k, v in scalars:
        lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    if path and (scalars or not tables):
        lines.append("")
    elif not path and scalars:
        lines.append("")
    for k, v in tables:
        _dump_table(lines, [*path, k], v)


def _toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        return key
    return _toml_string(key)


def _toml_string(s: str) -> str:
    out = ['"']
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise InvalidArgumentError(f"cannot write {type(v).__name__} as a TOML value")
