"""Registrations of the shim manager (``io.containerd.shim.v1.manager``) and the runtime v2
task manager (``io.containerd.runtime.v2.task``), as containerd names them."""

from __future__ import annotations

import logging
import platform

from arun.core.containers import ContainerStore
from arun.core.events import Publisher
from arun.errdefs import NotFoundError
from arun.plugin import InitContext, PluginType, register
from arun.runtime import ksm
from arun.runtime.manager import (
    ShimManager,
    ShimManagerConfig,
    TaskManager,
    TaskManagerConfig,
    check_socket_dir,
    default_socket_dir,
    shim_env,
)

log = logging.getLogger(__name__)

# InitContext.properties keys (set by the daemon; containerd's names).
_GRPC_ADDRESS = "io.containerd.plugin.grpc.address"
_TTRPC_ADDRESS = "io.containerd.plugin.ttrpc.address"


def _platform() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)
    return f"linux/{arch}"


@register(PluginType.SHIM, "manager", config=ShimManagerConfig)
async def init_shim_manager(ic: InitContext) -> ShimManager:
    cfg: ShimManagerConfig = ic.config
    daemon = ic.daemon_config
    grpc_address = ic.properties.get(_GRPC_ADDRESS) or daemon.grpc.address
    ttrpc_address = ic.properties.get(_TTRPC_ADDRESS) or daemon.ttrpc_address
    socket_dir = check_socket_dir(cfg.socket_dir) if cfg.socket_dir else default_socket_dir(daemon.state)
    env = shim_env(
        grpc_address,
        ttrpc_address,
        socket_dir,
        debug=daemon.debug.level in ("debug", "trace"),
        extra_env=cfg.env,
    )
    mode = ksm.check_mode(cfg.ksm)
    if mode == "on" and cfg.zygote:
        ksm.switch_on()
    shims = ShimManager(env, use_zygote=cfg.zygote, merge_memory=mode != "off")
    shims.start_zygote()
    ic.meta.exports["socket_dir"] = socket_dir
    return shims


@register(
    PluginType.RUNTIME_V2,
    "task",
    requires=(PluginType.SHIM, PluginType.EVENT, PluginType.METADATA),
    config=TaskManagerConfig,
)
async def init_task_manager(ic: InitContext) -> TaskManager:
    cfg: TaskManagerConfig = ic.config
    ic.meta.platforms = list(cfg.platforms) or [_platform()]
    shims: ShimManager = ic.get_by_id(PluginType.SHIM, "manager")
    publisher: Publisher | None = None
    try:
        publisher = ic.get_single(PluginType.EVENT)
    except NotFoundError:
        log.warning("no event exchange: task events of dead shims are not published")
    # The metadata plugin's container store (no import of arun.metadata: a sibling package).
    containers: ContainerStore | None = getattr(ic.get_single(PluginType.METADATA), "containers", None)
    await _mkdirs(ic)
    tasks = TaskManager(ic.root, ic.state, shims, publisher=publisher, containers=containers)
    await tasks.load_existing()
    return tasks


async def _mkdirs(ic: InitContext) -> None:
    import asyncio

    def mk() -> None:
        for d in (ic.root, ic.state):
            d.mkdir(mode=0o711, parents=True, exist_ok=True)

    await asyncio.to_thread(mk)
