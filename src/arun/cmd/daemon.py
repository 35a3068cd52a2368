"""``arun daemon``: read the config, load the plugins, serve, and shut down in stages.

Start-up, in order:
1. read and check the config (the file, then every plugin's own table), so a
   broken config fails before anything touches the disk, with one line on stderr;
2. set up logging, pick the event loop (uvloop unless ``[arun] uvloop = false``);
3. create root and state, refuse to run when a live daemon answers on the socket;
4. load the plugins in dependency order, then serve gRPC on the socket.

The ttrpc socket (``<address>.ttrpc`` unless ``[ttrpc] address``) serves what
plugins register with ``register_ttrpc`` (events forwarded by shims).

SIGTERM or SIGINT: stop accepting on both sockets (the socket files go away, new
gRPC requests on open connections get UNAVAILABLE), let requests in flight finish for
``[arun] shutdown_grace`` seconds (a second signal cuts that short), cancel the
rest, and close the plugins in reverse order.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from arun import log as arun_log
from arun.errdefs import ArunError, InvalidArgumentError
from arun.plugin import config as configmod
from arun.plugin.context import PluginSet
from arun.plugin.context import load as load_plugins
from arun.plugin.registry import Registry
from arun.server import sockets
from arun.server.grpc import GRPCServer, ServiceTable
from arun.server.ttrpc import TTRPCServer
from arun.version import VERSION, revision

log = logging.getLogger("arun.daemon")

# InitContext.properties keys, containerd's names.
PROPERTY_ROOT = "io.containerd.plugin.root"
PROPERTY_STATE = "io.containerd.plugin.state"
PROPERTY_GRPC_ADDRESS = "io.containerd.plugin.grpc.address"
PROPERTY_TTRPC_ADDRESS = "io.containerd.plugin.ttrpc.address"


def load_config(args: argparse.Namespace) -> configmod.Config:
    """The config file with the command-line overrides applied."""
    explicit = getattr(args, "config", None)
    cfg = configmod.load(explicit or configmod.DEFAULT_CONFIG, missing_ok=explicit is None)
    if getattr(args, "root", None):
        cfg.root = args.root
    if getattr(args, "state", None):
        cfg.state = args.state
    if getattr(args, "address", None):
        cfg.grpc.address = args.address
    if getattr(args, "log_level", None):
        cfg.debug.level = args.log_level
    return cfg


def check_config(cfg: configmod.Config, registry: Registry) -> None:
    """Reject what would otherwise fail later: levels, formats, paths and plugin tables."""
    arun_log.parse_level(cfg.debug.level)
    if cfg.debug.format not in arun_log.FORMATS:
        raise InvalidArgumentError(
            f"{cfg.source}: [debug] format {cfg.debug.format!r} is not one of {', '.join(arun_log.FORMATS)}"
        )
    for name, value in (("root", cfg.root), ("state", cfg.state), ("grpc.address", cfg.grpc.address)):
        if not value or not os.path.isabs(value):
            raise InvalidArgumentError(f"{cfg.source}: {name} must be an absolute path, got {value!r}")
    if cfg.arun.shutdown_grace < 0:
        raise InvalidArgumentError(f"{cfg.source}: [arun] shutdown_grace must not be negative")
    for reg in registry:
        table = cfg.plugins.get(reg.uri)
        if table is None:
            continue
        if reg.config is None:
            if table:
                raise InvalidArgumentError(f"{cfg.source}: plugin {reg.uri} takes no configuration")
            continue
        configmod.decode(reg.config, cfg.plugin_table(reg.uri), where=f"{cfg.source}: [plugins.{reg.uri!r}]")


class Daemon:
    def __init__(self, cfg: configmod.Config, registry: Registry) -> None:
        self.cfg = cfg
        self.registry = registry
        self.plugins: PluginSet | None = None
        self.grpc: GRPCServer | None = None
        self.ttrpc: TTRPCServer | None = None
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._signals = 0

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            self._stop.set()
        else:
            log.warning("received %s again, cancelling requests in flight", signal.Signals(signum).name)
            self._force.set()

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        self._on_signal(signal.SIGTERM)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            return await self._run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _run(self) -> int:
        cfg = self.cfg
        address = Path(cfg.grpc.address)
        ttrpc_address = Path(cfg.ttrpc_address)
        await asyncio.to_thread(_make_dirs, Path(cfg.root), Path(cfg.state))
        # Before any plugin opens a file under root: is another daemon running here?
        await sockets.prepare(address)
        await sockets.prepare(ttrpc_address)
        log.info("starting arun", extra={"version": VERSION, "revision": revision(), "pid": os.getpid()})
        properties = {
            PROPERTY_ROOT: cfg.root,
            PROPERTY_STATE: cfg.state,
            PROPERTY_GRPC_ADDRESS: cfg.grpc.address,
            PROPERTY_TTRPC_ADDRESS: cfg.ttrpc_address,
        }
        self.plugins = await load_plugins(self.registry, cfg, properties=properties)
        try:
            if self._stop.is_set():
                return 0
            table = ServiceTable()
            table.register_plugins(self.plugins)
            self.grpc = GRPCServer(table)
            self.ttrpc = TTRPCServer()
            self.ttrpc.register_plugins(self.plugins)
            await self.ttrpc.start(ttrpc_address, uid=cfg.ttrpc.uid, gid=cfg.ttrpc.gid)
            await self.grpc.start(address, uid=cfg.grpc.uid, gid=cfg.grpc.gid)
            log.info("arun successfully booted", extra={"address": str(address), "ttrpc": str(ttrpc_address)})
            await self._stop.wait()
            await self._shutdown()
            return 0
        finally:
            if self.grpc is not None:
                await self.grpc.close()
            if self.ttrpc is not None:
                await self.ttrpc.close()
            await self.plugins.close()
            log.info("arun stopped")

    async def _shutdown(self) -> None:
        assert self.grpc is not None and self.ttrpc is not None
        grace = self.cfg.arun.shutdown_grace
        self.grpc.stop_accepting()
        # Streams that only end when told to (event subscriptions) are told now, or the
        # drain would wait out its whole grace period for them.
        for p in self.plugins.ordered if self.plugins is not None else ():
            begin = getattr(p.instance, "begin_shutdown", None)
            if p.ok and callable(begin):
                begin()
        drain: asyncio.Future[Any] = asyncio.gather(self.grpc.drain(grace), self.ttrpc.shutdown(grace))
        force: asyncio.Future[Any] = asyncio.ensure_future(self._force.wait())
        try:
            await asyncio.wait({drain, force}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (drain, force):
                t.cancel()
            await asyncio.gather(drain, force, return_exceptions=True)
        await self.grpc.close()
        await self.ttrpc.close()


def _make_dirs(root: Path, state: Path) -> None:
    for d in (root, state):
        d.mkdir(mode=0o711, parents=True, exist_ok=True)


def _runner(use_uvloop: bool) -> Any:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; using the asyncio event loop")
        else:
            return uvloop.run
    return asyncio.run


def fail(message: str) -> int:
    """Print the one-line reason a daemon could not start; the exit status."""
    print(f"arun: {' '.join(message.split())}", file=sys.stderr)
    return 1


def main(args: argparse.Namespace, registry: Registry | None = None) -> int:
    if registry is None:
        from arun import builtins  # noqa: F401  (fills the default registry)
        from arun.plugin.registry import default

        registry = default
    try:
        cfg = load_config(args)
        check_config(cfg, registry)
    except ArunError as e:
        return fail(str(e))
    arun_log.setup(cfg.debug.level, cfg.debug.format)
    daemon_coro: Coroutine[Any, Any, int] = Daemon(cfg, registry).run()
    try:
        code: int = _runner(cfg.arun.uvloop)(daemon_coro)
        return code
    except ArunError as e:
        log.debug("start-up failed", exc_info=True)
        return fail(str(e))
    except OSError as e:
        log.debug("start-up failed", exc_info=True)
        return fail(f"{e.strerror or e}: {e.filename!r}" if e.filename else str(e))
    except Exception as e:
        log.error("start-up failed", exc_info=True)
        return fail(f"{type(e).__name__}: {e}")
