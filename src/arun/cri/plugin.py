"""Registrations of the CRI plugin.

* ``io.containerd.cri.v1.runtime`` and ``io.containerd.cri.v1.images``: the version 3
  config sections (their instances are the decoded sections);
* ``io.containerd.grpc.v1.cri``: the CRI service itself (``runtime.v1.RuntimeService`` and
  ``runtime.v1.ImageService``), whose section holds the whole version 2 layout.

The effective configuration merges the three (see :mod:`arun.cri.config`). The service
pins the ``k8s.io`` namespace, uses the stores and the task runtime in-process, serves
streaming on its own HTTP server, and recovers its pods and containers at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from arun.cni import DEFAULT_BIN_DIRS, PodNetwork
from arun.cri.config import CRIConfig, ImagesSection, RuntimeSection, merge_tables
from arun.cri.container_exec import CRIStreamingRuntime
from arun.cri.criservice import CRIService
from arun.cri.service import ImageServicer, RuntimeServicer
from arun.cri.streaming import StreamingServer, from_cri_config
from arun.errdefs import FailedPreconditionError, NotFoundError
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import GRPCRegistrar

log = logging.getLogger(__name__)

RUNTIME_URI = f"{PluginType.CRI}.runtime"
IMAGES_URI = f"{PluginType.CRI}.images"
GRPC_URI = f"{PluginType.GRPC}.cri"


@register(PluginType.CRI, "runtime", config=RuntimeSection)
async def init_runtime_section(ic: InitContext) -> RuntimeSection:
    section: RuntimeSection = ic.config
    return section


@register(PluginType.CRI, "images", config=ImagesSection)
async def init_images_section(ic: InitContext) -> ImagesSection:
    section: ImagesSection = ic.config
    return section


class CRIPlugin:
    """The instance of ``io.containerd.grpc.v1.cri``: the CRI servicers and their service."""

    def __init__(self, service: CRIService) -> None:
        self.service = service
        self.runtime = RuntimeServicer(service)
        self.images = ImageServicer(service)

    def register(self, server: GRPCRegistrar, /) -> None:
        server.add(self.runtime)
        server.add(self.images)

    async def close(self) -> None:
        await self.service.close()


def effective_config(ic: InitContext) -> CRIConfig:
    daemon = ic.daemon_config
    return merge_tables(
        daemon.plugin_table(GRPC_URI),
        daemon.plugin_table(RUNTIME_URI),
        daemon.plugin_table(IMAGES_URI),
        where=f"{daemon.source}: CRI plugin config",
        version=daemon.version,
    )


@register(
    PluginType.GRPC,
    "cri",
    requires=(
        PluginType.CRI,
        PluginType.METADATA,
        PluginType.RUNTIME_V2,
        PluginType.EVENT,
        PluginType.TRANSFER,
        PluginType.GC,
    ),
    config=CRIConfig,
)
async def init(ic: InitContext) -> CRIPlugin:
    cfg = effective_config(ic)
    meta: Any = ic.get_single(PluginType.METADATA)
    if getattr(meta, "containers", None) is None:
        raise FailedPreconditionError("the metadata plugin has no container store")
    runtime = ic.get_by_id(PluginType.RUNTIME_V2, "task")
    try:
        subscriber = ic.get_single(PluginType.EVENT)
    except NotFoundError:
        subscriber = None
    try:
        transfer = ic.get_by_id(PluginType.TRANSFER, "local")
    except (NotFoundError, FailedPreconditionError) as e:
        log.warning("CRI without a transfer service: PullImage will fail (%s)", e)
        transfer = None
    try:
        collect = ic.get_single(PluginType.GC).schedule_and_wait
    except (NotFoundError, FailedPreconditionError):
        collect = None
    root, state = Path(ic.root), Path(ic.state)
    bin_dirs = [d for d in ([cfg.cni.bin_dir] if cfg.cni.bin_dir else []) + list(cfg.cni.bin_dirs) if d]
    netns_dir = str(state / "netns") if cfg.netns_mounts_under_state_dir else "/run/arun/netns"
    network = PodNetwork(
        conf_dir=cfg.cni.conf_dir,
        bin_dirs=bin_dirs or list(DEFAULT_BIN_DIRS),
        max_conf_num=cfg.cni.max_conf_num,
        cache_dir=str(root / "cni"),
        netns_dir=netns_dir,
        loopback="internal" if cfg.cni.use_internal_loopback else "cni",
        setup_serially=cfg.cni.setup_serially,
    )
    service = CRIService(
        cfg,
        root=root,
        state=state,
        meta=meta,
        runtime=runtime,
        network=network,
        transfer=transfer,
        subscriber=subscriber,
        daemon_root=Path(ic.daemon_config.root),
        collect=collect,
    )
    streaming = StreamingServer(
        CRIStreamingRuntime(service),
        from_cri_config(
            stream_server_address=cfg.stream_server_address,
            stream_server_port=cfg.stream_server_port,
            stream_idle_timeout=cfg.stream_idle_timeout,
            enable_tls_streaming=cfg.enable_tls_streaming,
            tls_cert_file=cfg.x509_key_pair_streaming.tls_cert_file,
            tls_key_file=cfg.x509_key_pair_streaming.tls_key_file,
        ),
    )
    await streaming.start()
    service.streaming = streaming
    try:
        await service.start()
    except BaseException:
        await service.close()
        raise
    ic.meta.exports["stream_url"] = str(getattr(streaming, "url", ""))
    return CRIPlugin(service)
