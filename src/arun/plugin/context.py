"""Initialising plugins: the InitContext each ``init`` receives, and the
loaded set that later lookups, introspection and shutdown use."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arun.errdefs import FailedPreconditionError, NotFoundError
from arun.plugin.config import Config, decode
from arun.plugin.registry import Registration, SkipPlugin

log = logging.getLogger(__name__)

# The URI of the plugin whose ``init`` is running (tasks it starts inherit it); log
# records carry it as ``plugin``.
current_plugin: ContextVar[str | None] = ContextVar("plugin", default=None)


@dataclass
class Meta:
    """What a plugin reports about itself (introspection's exports/capabilities/platforms)."""

    exports: dict[str, str] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)


@dataclass
class Plugin:
    """One registration after the loader ran it."""

    registration: Registration
    meta: Meta
    instance: object | None = None
    # Set when init raised: SkipPlugin (skipped) or any other error (failed).
    error: BaseException | None = None

    @property
    def uri(self) -> str:
        return self.registration.uri

    @property
    def skipped(self) -> bool:
        return isinstance(self.error, SkipPlugin)

    @property
    def ok(self) -> bool:
        return self.error is None


class PluginSet:
    """The plugins in initialisation order, with lookups by type and id."""

    def __init__(self) -> None:
        self.ordered: list[Plugin] = []
        self._by_type: dict[str, dict[str, Plugin]] = {}

    def add(self, p: Plugin) -> None:
        self.ordered.append(p)
        self._by_type.setdefault(p.registration.type, {})[p.registration.id] = p

    def get(self, type_: str, id_: str) -> object:
        p = self._by_type.get(str(type_), {}).get(id_)
        if p is None:
            raise NotFoundError(f"plugin {type_}.{id_} not found")
        if p.error is not None:
            raise FailedPreconditionError(f"plugin {p.uri} is not initialized: {p.error}") from p.error
        return p.instance

    def get_all(self, type_: str) -> dict[str, object]:
        return {i: p.instance for i, p in self._by_type.get(str(type_), {}).items() if p.ok}

    def get_single(self, type_: str) -> object:
        ok = self.get_all(type_)
        if not ok:
            failed = list(self._by_type.get(str(type_), {}).values())
            reason = f": {failed[0].error}" if failed else ""
            raise NotFoundError(f"no plugins registered for {type_}{reason}")
        if len(ok) > 1:
            raise FailedPreconditionError(f"more than one plugin of type {type_}: {sorted(ok)}")
        return next(iter(ok.values()))

    async def close(self) -> None:
        """Close initialised plugins in reverse order; errors are logged, not raised."""
        for p in reversed(self.ordered):
            close = getattr(p.instance, "close", None)
            if p.ok and close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("closing plugin failed", extra={"plugin": p.uri})


@dataclass
class InitContext:
    """Everything a plugin's ``init`` may use."""

    registration: Registration
    config: Any
    root: Path
    state: Path
    daemon_config: Config
    plugins: PluginSet
    meta: Meta
    # Free-form daemon properties: grpc address, ttrpc address, version…
    properties: dict[str, str] = field(default_factory=dict)

    def get_single(self, type_: str) -> Any:
        return self.plugins.get_single(type_)

    def get_by_id(self, type_: str, id_: str) -> Any:
        return self.plugins.get(type_, id_)

    def get_all(self, type_: str) -> dict[str, Any]:
        return self.plugins.get_all(type_)


async def load(
    registrations: Iterable[Registration],
    cfg: Config,
    *,
    properties: dict[str, str] | None = None,
) -> PluginSet:
    """Initialise every enabled registration in dependency order.

    A SkipPlugin is logged at INFO, any other failure at WARNING; a failure
    aborts start-up only for plugins in ``required_plugins``. Config tables
    are decoded before ``init`` runs, so a bad key fails the plugin (and a
    required plugin fails start-up) with a message naming the key.
    """
    from arun.plugin.registry import graph

    disabled = set(cfg.disabled_plugins)
    required = set(cfg.required_plugins)
    regs = list(registrations)
    known = {r.uri for r in regs}
    for uri in cfg.plugins:
        if uri not in known:
            log.warning("config has a section for unknown plugin %s; ignored", uri)
    for uri in required & disabled:
        raise FailedPreconditionError(f"required plugin {uri} is disabled")

    plugins = PluginSet()
    for reg in graph(regs, lambda r: r.uri in disabled):
        meta = Meta(platforms=list(reg.platforms))
        plugin = Plugin(reg, meta)
        log.info("loading plugin", extra={"plugin_id": reg.id, "plugin_type": reg.type})
        try:
            conf: Any = None
            table = cfg.plugin_table(reg.uri)
            if reg.config is not None:
                conf = decode(reg.config, table, where=f"{cfg.source}: [plugins.{reg.uri!r}]")
            elif table:
                raise FailedPreconditionError(f"{cfg.source}: plugin {reg.uri} takes no configuration")
            ic = InitContext(
                registration=reg,
                config=conf,
                root=Path(cfg.root) / reg.uri,
                state=Path(cfg.state) / reg.uri,
                daemon_config=cfg,
                plugins=plugins,
                meta=meta,
                properties=dict(properties or {}),
            )
            token = current_plugin.set(reg.uri)
            try:
                plugin.instance = await reg.init(ic)
            finally:
                current_plugin.reset(token)
        except SkipPlugin as e:
            plugin.error = e
            log.info("skip loading plugin %s: %s", reg.uri, e)
        except Exception as e:
            plugin.error = e
            if reg.uri in required:
                plugins.add(plugin)
                await plugins.close()
                raise
            log.warning("failed to load plugin %s: %s", reg.uri, e, exc_info=log.isEnabledFor(logging.DEBUG))
        plugins.add(plugin)
    missing = required - {p.uri for p in plugins.ordered}
    if missing:
        await plugins.close()
        raise FailedPreconditionError(f"required plugins not loaded: {sorted(missing)}")
    return plugins
