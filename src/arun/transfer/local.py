"""The daemon's one pull/push path (containerd's ``io.containerd.transfer.v1.local``).

``LocalTransfer`` is what every entry point calls: the transfer gRPC service (``ctr`` 2.x
and ``arun images pull|push``) and the CRI plugin's ``PullImage``. It owns one aiohttp
session (keep-alive connections shared by all pulls), the daemon's registry hosts
configuration (``config_path``), and builds a ``RegistryClient`` per operation with that
operation's credentials.

Python API (the CRI plugin's PullImage)::

    transfer = ic.get_by_id(PluginType.TRANSFER, "local")   # a LocalTransfer
    with namespaces.use("k8s.io"):
        result = await transfer.pull(
            "docker.io/library/busybox:latest",          # fully qualified (reference.parse_docker_ref)
            credentials=credentials_from_auth_config(auth), # or None
            snapshotter="overlayfs",
            image_labels={"io.cri-containerd.image": "managed"},
            on_progress=callback,                          # optional, arun.transfer.progress.Progress
            hosts=HostsConfig(config_path=[...]),          # optional: the CRI registry config
        )
    result.image, result.target, result.config, result.chain_id

Errors are errdefs errors (see ``arun.transfer.pull.pull``); a pull with no bytes for
``stall_timeout`` fails with DeadlineExceededError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from arun import errdefs, platforms
from arun.images.manifest import Descriptor
from arun.remotes.auth import Credentials
from arun.remotes.client import ClientOptions, RegistryClient
from arun.remotes.hosts import HostsConfig, parse_duration
from arun.transfer.progress import ProgressCallback
from arun.transfer.pull import PullOptions, PullResult, pull
from arun.transfer.push import PushOptions, PushResult, push
from arun.transfer.stores import Stores

log = logging.getLogger(__name__)

__all__ = ["LocalTransfer", "TransferConfig", "UnpackConfig"]


@dataclass
class UnpackConfig:
    """One ``[[plugins."io.containerd.transfer.v1.local".unpack_config]]`` entry."""

    platform: str = ""
    snapshotter: str = "overlayfs"
    differ: str = ""


@dataclass
class TransferConfig:
    """``[plugins."io.containerd.transfer.v1.local"]`` — containerd's keys, plus
    ``stall_timeout`` (a Go duration: no bytes for this long fails a pull)."""

    max_concurrent_downloads: int = 3
    max_concurrent_uploaded_layers: int = 3
    max_concurrent_unpacks: int = 1
    config_path: str = ""
    check_platform_supported: bool = False
    unpack_config: list[UnpackConfig] = field(default_factory=list)
    stall_timeout: str = "5m"
    concurrent_layer_fetch_buffer: int = 0


StoresFor = Callable[[str], Stores]


class LocalTransfer:
    """Pulls and pushes for the whole daemon; call within a namespace."""

    def __init__(
        self, config: TransferConfig, stores_for: StoresFor, *, default_snapshotter: str = ""
    ) -> None:
        self.config = config
        self.stores_for = stores_for
        self.default_snapshotter = default_snapshotter or (
            config.unpack_config[0].snapshotter if config.unpack_config else "overlayfs"
        )
        self.hosts = HostsConfig(config_path=[p for p in config.config_path.split(":") if p])
        stall = parse_duration(config.stall_timeout) if config.stall_timeout else 0.0
        self.client_options = ClientOptions(stall_timeout=stall or None)
        self._session: aiohttp.ClientSession | None = None

    def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, limit_per_host=self.client_options.connections_per_host
                ),
                auto_decompress=False,
                headers={"User-Agent": self.client_options.user_agent},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def hosts_for(
        self,
        *,
        hosts: HostsConfig | None = None,
        host_dir: str = "",
        plain_http: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> HostsConfig:
        h = hosts or self.hosts
        if host_dir:
            h = replace(h, config_path=[host_dir])
        if plain_http:
            h = replace(h, default_scheme="http")
        if headers:
            h = replace(h, headers={**h.headers, **{k: (v,) for k, v in headers.items()}})
        return h

    def client(
        self, hosts: HostsConfig, credentials: Credentials | None, *, stall_timeout: float | None = None
    ) -> RegistryClient:
        options = self.client_options
        if stall_timeout is not None and stall_timeout > 0:
            options = replace(options, stall_timeout=stall_timeout)
        return RegistryClient(hosts, credentials=credentials, options=options, session=self._session_get())

    def _unpack_target(self, plats: Sequence[platforms.Platform], snapshotter: str) -> str:
        """The snapshotter to unpack into, honouring ``unpack_config`` when a platform is asked for."""
        if snapshotter:
            return snapshotter
        for p in plats:
            for u in self.config.unpack_config:
                if not u.platform or platforms.only(platforms.parse(u.platform)).match(p):
                    return u.snapshotter
        return self.default_snapshotter

    async def pull(
        self,
        ref: str,
        *,
        credentials: Credentials | None = None,
        platforms_: Sequence[platforms.Platform] = (),
        all_platforms: bool = False,
        unpack: bool = True,
        snapshotter: str = "",
        image_name: str = "",
        image_labels: Mapping[str, str] | None = None,
        on_progress: ProgressCallback | None = None,
        hosts: HostsConfig | None = None,
        plain_http: bool = False,
        host_dir: str = "",
        headers: Mapping[str, str] | None = None,
        max_concurrent_downloads: int | None = None,
        stall_timeout: float | None = None,
    ) -> PullResult:
        """Pull ``ref`` into the current namespace (see the module docstring).

        ``stall_timeout`` (seconds, > 0) replaces the configured one for this pull: no byte
        received for that long fails it with DeadlineExceededError (CRI's
        ``image_pull_progress_timeout``)."""
        matcher = platforms.ordered(*platforms_) if platforms_ else None
        if matcher is not None and len(platforms_) == 1:
            matcher = platforms.only(platforms_[0])
        sn = self._unpack_target(platforms_ or [platforms.default_spec()], snapshotter)
        stores = self.stores_for(sn)
        if unpack and (stores.snapshotter is None or stores.applier is None):
            raise errdefs.NotFoundError(f"snapshotter {sn!r} is not available for unpacking")
        opts = PullOptions(
            platforms=matcher,
            all_platforms=all_platforms,
            unpack=unpack,
            max_concurrent_downloads=max_concurrent_downloads or self.config.max_concurrent_downloads,
            image_name=image_name,
            image_labels=dict(image_labels or {}),
            on_progress=on_progress,
        )
        hc = self.hosts_for(hosts=hosts, host_dir=host_dir, plain_http=plain_http, headers=headers)
        async with self.client(hc, credentials, stall_timeout=stall_timeout) as client:
            return await pull(client, ref, stores, opts)

    async def push(
        self,
        ref: str,
        target: Descriptor,
        *,
        credentials: Credentials | None = None,
        platforms_: Sequence[platforms.Platform] = (),
        on_progress: ProgressCallback | None = None,
        hosts: HostsConfig | None = None,
        plain_http: bool = False,
        host_dir: str = "",
        headers: Mapping[str, str] | None = None,
        chunk_size: int | None = None,
    ) -> PushResult:
        """Push the image rooted at ``target`` (from the current namespace's content) to ``ref``."""
        stores = self.stores_for(self.default_snapshotter)
        opts = PushOptions(
            platforms=platforms.any_of(*platforms_) if platforms_ else None,
            max_concurrent_uploads=self.config.max_concurrent_uploaded_layers,
            chunk_size=chunk_size,
            on_progress=on_progress,
        )
        hc = self.hosts_for(hosts=hosts, host_dir=host_dir, plain_http=plain_http, headers=headers)
        async with self.client(hc, credentials) as client:
            return await push(client, ref, stores.content, target, opts)

    async def image_target(self, name: str) -> Any:
        """The target descriptor of the image ``name`` in the current namespace."""
        stores = self.stores_for(self.default_snapshotter)
        img = await stores.images.get(name)
        return img.target
