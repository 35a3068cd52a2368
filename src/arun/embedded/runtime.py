"""``arun.Runtime``: the client API over an arun booted inside the caller's event loop.

::

    async with arun.Runtime() as rt:                 # a temporary root and state
        await rt.import_archive("busybox.tar")
        ctr = await rt.containers.create("t1", "docker.io/library/busybox:latest", command=["true"])
        ...

Start-up does what ``arun daemon`` does minus the gRPC socket: read the
config (embedded defaults, a file, or TOML text), load every registered
plugin (``arun.builtins``) in dependency order on ``root``/``state``, and
collect the gRPC services into a handler table the client calls directly
(``InProcessTransport``). The ttrpc socket shims publish their events on is
still served, under ``state``. ``close()`` ends subscriptions, cancels
requests in flight, closes the plugins in reverse order and — for a root
the runtime made itself — kills leftover tasks, unmounts what is still
mounted under it and removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from arun import errdefs
from arun.client import Client
from arun.client.client import DEFAULT_RUNTIME, DEFAULT_SNAPSHOTTER
from arun.client.types import RuncOptions
from arun.embedded.transport import InProcessTransport

__all__ = ["Runtime"]

log = logging.getLogger(__name__)

# InitContext.properties keys (containerd's names), as ``arun daemon`` sets them.
PROPERTY_ROOT = "io.containerd.plugin.root"
PROPERTY_STATE = "io.containerd.plugin.state"
PROPERTY_GRPC_ADDRESS = "io.containerd.plugin.grpc.address"
PROPERTY_TTRPC_ADDRESS = "io.containerd.plugin.ttrpc.address"


class Runtime(Client):
    """An embedded arun with the ``Client`` API; use it with ``async with``.

    ``root``/``state``: where the plugins keep their data (a temporary
    directory, removed on close, for each one not given). ``config`` (a file)
    or ``config_text`` (TOML) as for ``arun daemon``. ``serve_ttrpc``: serve
    the ttrpc socket shims send events to (needed to run tasks).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        state: str | Path | None = None,
        config: str | Path | None = None,
        config_text: str | None = None,
        namespace: str = "default",
        timeout: float | None = None,
        snapshotter: str = DEFAULT_SNAPSHOTTER,
        runtime: str = DEFAULT_RUNTIME,
        runtime_options: RuncOptions | None = None,
        fifo_dir: str | None = None,
        serve_ttrpc: bool = True,
        registry: Any = None,
    ) -> None:
        self._rt_transport = InProcessTransport()
        super().__init__(
            "embedded",
            namespace,
            timeout=timeout,
            transport=self._rt_transport,
            snapshotter=snapshotter,
            runtime=runtime,
            runtime_options=runtime_options,
            fifo_dir=fifo_dir,
        )
        self._owns_transport = False
        self._want_root = Path(root) if root is not None else None
        self._want_state = Path(state) if state is not None else None
        self._config_path = config
        self._config_text = config_text
        self._serve_ttrpc = serve_ttrpc
        self._registry = registry
        self._temp: list[Path] = []
        self._plugins: Any = None
        self._ttrpc: Any = None
        self.root: Path | None = None
        self.state: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def plugins(self) -> Any:
        """The loaded ``PluginSet`` (None before ``start``)."""
        return self._plugins

    async def start(self) -> Runtime:
        """Boot the plugins on the root and connect the client API to them; ``async with`` does this."""
        if self._plugins is not None:
            return self
        from arun.plugin import config as configmod
        from arun.plugin.context import load as load_plugins
        from arun.server.grpc import ServiceTable

        registry = self._registry
        if registry is None:
            from arun import builtins  # noqa: F401  (fills the default registry)
            from arun.plugin.registry import default

            registry = default
        if self._config_text is not None:
            cfg = configmod.loads(self._config_text, source="<Runtime config_text>")
        else:
            cfg = (
                configmod.load(self._config_path, missing_ok=False)
                if self._config_path
                else configmod.Config()
            )
        root = self._want_root or self._make_temp("arun-rt-root-")
        # Short: the ttrpc socket path lives under state and unix socket paths are limited.
        state = self._want_state or self._make_temp("arun-rt-")
        await asyncio.to_thread(_make_dirs, root, state)
        cfg.root, cfg.state = str(root), str(state)
        cfg.grpc.address = str(state / "embedded.sock")  # never listened on; plugins may record it
        cfg.ttrpc.address = str(state / "arun.ttrpc")
        self.root, self.state = root, state
        properties = {
            PROPERTY_ROOT: cfg.root,
            PROPERTY_STATE: cfg.state,
            PROPERTY_GRPC_ADDRESS: cfg.grpc.address,
            PROPERTY_TTRPC_ADDRESS: cfg.ttrpc_address,
        }
        try:
            self._plugins = await load_plugins(registry, cfg, properties=properties)
            table = ServiceTable()
            table.register_plugins(self._plugins)
            if self._serve_ttrpc:
                from arun.server.ttrpc import TTRPCServer

                ttrpc = TTRPCServer()
                ttrpc.register_plugins(self._plugins)
                await ttrpc.start(cfg.ttrpc_address)
                self._ttrpc = ttrpc
            self._rt_transport.routes = table.routes()
            self._rt_transport.closed = False
        except BaseException:
            await self.close()
            raise
        log.info("embedded arun started", extra={"root": str(root), "state": str(state)})
        return self

    def _make_temp(self, prefix: str) -> Path:
        d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self._temp.append(d)
        return d

    async def close(self) -> None:
        """Stop: end subscriptions, cancel requests, close plugins, remove temporary directories."""
        if self._plugins is not None and self._temp and self._rt_transport.routes is not None:
            with contextlib.suppress(Exception):
                await self._kill_tasks()
        if self._plugins is not None:
            for p in self._plugins.ordered:
                begin = getattr(p.instance, "begin_shutdown", None)
                if p.ok and callable(begin):
                    with contextlib.suppress(Exception):
                        begin()
        for io in list(self._iosets):
            io.close()
        await self._rt_transport.close()
        if self._ttrpc is not None:
            await self._ttrpc.close()
            self._ttrpc = None
        if self._plugins is not None:
            await self._plugins.close()
            self._plugins = None
        for d in self._temp:
            await asyncio.to_thread(_remove_tree, d)
        self._temp = []

    async def _kill_tasks(self) -> None:
        """Tasks still running under a temporary root would outlive it: kill and delete them."""
        for ns in await self.namespaces():
            c = self.with_namespace(ns.name)
            try:
                tasks = await c.tasks()
            except errdefs.ArunError:
                return
            for t in tasks:
                with contextlib.suppress(errdefs.ArunError):
                    await (await c.task(t.id)).delete(force=True)

    def client(self, namespace: str | None = None) -> Client:
        """A client of this runtime for ``namespace`` (sharing it; closing it does not stop the runtime)."""
        return self.with_namespace(namespace or self.namespace)


def _make_dirs(*dirs: Path) -> None:
    for d in dirs:
        d.mkdir(mode=0o711, parents=True, exist_ok=True)


def _mounts_under(base: Path) -> list[str]:
    prefix = str(base.resolve()) + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix) or mp == prefix[:-1]:
                out.append(mp)
    return out


def _remove_tree(d: Path) -> None:
    """Remove a directory the runtime made, never recursing through something still mounted."""
    for _ in range(3):
        mps = _mounts_under(d)
        if not mps:
            break
        for mp in sorted(mps, key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
    if _mounts_under(d):
        log.warning("not removing %s: still mounted", d)
        return
    shutil.rmtree(d, ignore_errors=True)
    if os.path.exists(d):
        log.warning("could not remove %s", d)
