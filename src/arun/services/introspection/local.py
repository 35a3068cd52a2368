"""What the daemon knows about itself: its plugins (with their init status) and its identity."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arun import filters
from arun.errdefs import FailedPreconditionError, NotFoundError, UnimplementedError
from arun.errdefs import grpc as errgrpc
from arun.plugin.context import Plugin, PluginSet
from arun.plugin.registry import SkipPlugin

# ``ctr plugins ls`` prints "skip" for a plugin whose init error contains this text.
SKIP_MARKER = "skip plugin"


@dataclass(frozen=True)
class InitError:
    code: int
    message: str


@dataclass(frozen=True)
class PluginInfo:
    type: str
    id: str
    requires: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()  # "os/arch[/variant]"
    exports: dict[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    init_err: InitError | None = None

    def field(self, path: Sequence[str]) -> str | None:
        """The filter adaptor: ``type`` and ``id``, as containerd's introspection matches."""
        if len(path) == 1 and path[0] in ("type", "id"):
            value: str = getattr(self, path[0])
            return value or None
        return None


def init_error(exc: BaseException | None) -> InitError | None:
    if exc is None:
        return None
    if isinstance(exc, SkipPlugin):
        reason = str(exc)
        return InitError(errgrpc.code_of(exc), f"{reason}: {SKIP_MARKER}" if reason else SKIP_MARKER)
    return InitError(errgrpc.code_of(exc), errgrpc.message_of(exc) or type(exc).__name__)


def info_of(p: Plugin) -> PluginInfo:
    reg = p.registration
    platforms = list(reg.platforms) + [x for x in p.meta.platforms if x not in reg.platforms]
    return PluginInfo(
        type=reg.type,
        id=reg.id,
        requires=tuple(reg.requires),
        platforms=tuple(platforms),
        exports=dict(p.meta.exports),
        capabilities=tuple(p.meta.capabilities),
        init_err=init_error(p.error),
    )


@dataclass(frozen=True)
class ServerInfo:
    uuid: str
    pid: int
    pidns: int


class IntrospectionLocal:
    def __init__(self, plugins: PluginSet, root: Path) -> None:
        self._plugins = plugins
        self.root = root
        self._uuid_lock = asyncio.Lock()

    def plugins(self, filter_texts: Iterable[str] = ()) -> list[PluginInfo]:
        """Every plugin the daemon tried to load, in load order, matching any of the filters."""
        f = filters.parse_all(filter_texts)
        infos = [info_of(p) for p in self._plugins.ordered]
        return [i for i in infos if f.match(i.field)]

    def plugin(self, type_: str, id_: str) -> Plugin:
        for p in self._plugins.ordered:
            if p.registration.type == type_ and p.registration.id == id_:
                return p
        raise NotFoundError(f"plugin {type_}.{id_} not found")

    async def plugin_info(self, type_: str, id_: str, options: Any | None) -> tuple[PluginInfo, Any | None]:
        """The plugin and, when ``options`` is given, the extra information its instance provides."""
        p = self.plugin(type_, id_)
        info = info_of(p)
        if options is None:
            return info, None
        if not p.ok:
            raise FailedPreconditionError(f"cannot get extra info, plugin {p.uri} not successfully loaded")
        provider = getattr(p.instance, "plugin_info", None)
        if provider is None:
            raise UnimplementedError(f"plugin {p.uri} does not provide extra information")
        return info, await provider(options)

    async def server(self) -> ServerInfo:
        return ServerInfo(uuid=await self._uuid(), pid=os.getpid(), pidns=_pidns())

    async def _uuid(self) -> str:
        async with self._uuid_lock:
            return await asyncio.to_thread(_load_or_create_uuid, self.root / "uuid")


def _load_or_create_uuid(path: Path) -> str:
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text().strip()
        if text:
            try:
                return str(uuid.UUID(text))
            except ValueError:
                raise FailedPreconditionError(
                    f"server uuid file {str(path)!r} is corrupt: {text!r}"
                ) from None
    new = str(uuid.uuid4())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return new


def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0
