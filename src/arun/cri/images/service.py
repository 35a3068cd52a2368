"""The CRI image operations: PullImage, ImageStatus, ListImages, RemoveImage, ImageFsInfo.

Pulls go through the daemon's transfer service (``io.containerd.transfer.v1.local``)
with the CRI registry configuration: ``registry.config_path`` (hosts.toml
directories) or the legacy ``registry.mirrors``, per-host credentials from
``registry.configs.<host>.auth`` unless the request carries an AuthConfig, and
``max_concurrent_downloads``. Records are created for the image id, the repo tag
(when the reference had one) and the repo digest, labelled
``io.cri-containerd.image=managed`` (and ``io.cri-containerd.pinned=pinned`` for the
sandbox image, which RemoveImage still removes when asked, as containerd does).
Concurrent pulls of one reference share a single transfer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from arun import reference as refs
from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.images.store import (
    LABEL_IMAGE,
    LABEL_IMAGE_MANAGED,
    LABEL_PINNED,
    LABEL_PINNED_VALUE,
    CRIImage,
    ensure_records,
    references_for,
)
from arun.cri.streaming import parse_go_duration
from arun.errdefs import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)

log = logging.getLogger(__name__)


def hosts_config(c: CRIService) -> Any:
    from arun.remotes.hosts import HostsConfig, RegistryHost

    reg = c.config.registry
    paths = [p for p in reg.config_path.split(":") if p]
    mirrors = {host: list(m.endpoint) for host, m in reg.mirrors.items() if m.endpoint}
    headers = {k: tuple(v) for k, v in reg.headers.items()}
    tls = {}
    for host, rc in reg.configs.items():
        if rc.tls is None:
            continue
        t = rc.tls
        tls[host] = RegistryHost(
            host=host,
            skip_verify=t.insecure_skip_verify or None,
            ca_certs=(t.ca_file,) if t.ca_file else (),
            client_pairs=((t.cert_file, t.key_file),) if t.cert_file else (),
        )
    return HostsConfig(config_path=paths, mirrors=mirrors if not paths else {}, headers=headers, tls=tls)


def credentials(c: CRIService, auth: api_pb2.AuthConfig | None) -> Any:
    from arun.remotes.auth import AuthConfig, credentials_from_auth_config

    req_auth = None
    if auth is not None and any(
        (auth.username, auth.password, auth.auth, auth.identity_token, auth.registry_token)
    ):
        req_auth = AuthConfig(
            username=auth.username,
            password=auth.password,
            auth=auth.auth,
            server_address=auth.server_address,
            identity_token=auth.identity_token,
            registry_token=auth.registry_token,
        )
    fallback = {}
    for host, rc in c.config.registry.configs.items():
        if rc.auth is not None:
            fallback[host] = AuthConfig(
                username=rc.auth.username,
                password=rc.auth.password,
                auth=rc.auth.auth,
                identity_token=rc.auth.identitytoken,
            )
    for host, a in c.config.registry.auths.items():
        fallback.setdefault(
            host.split("://")[-1],
            AuthConfig(username=a.username, password=a.password, auth=a.auth, identity_token=a.identitytoken),
        )
    return credentials_from_auth_config(req_auth, fallback)


async def pull(
    c: CRIService,
    image: str,
    auth: api_pb2.AuthConfig | None = None,
    *,
    pinned: bool = False,
    snapshotter: str = "",
) -> str:
    """Pull ``image`` (a reference kubelet passes: short names are normalised); its image id."""
    try:
        ref = refs.parse_docker_ref(image)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"failed to parse image reference {image!r}: {e.message}") from None
    name = str(ref)
    key = f"{name}\x00{snapshotter}\x00{pinned}"
    pending = c.pulls.get(key)
    if pending is not None and auth is None:
        return await asyncio.shield(pending)
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    c.pulls[key] = fut
    try:
        image_id = await _pull(c, ref, auth, pinned=pinned, snapshotter=snapshotter)
    except BaseException as e:
        if not fut.done():
            if isinstance(e, Exception):
                fut.set_exception(e)
            else:
                fut.cancel()
            if not fut.cancelled():
                fut.exception()
        raise
    else:
        fut.set_result(image_id)
        return image_id
    finally:
        if c.pulls.get(key) is fut:
            del c.pulls[key]


async def _pull(
    c: CRIService, ref: refs.Reference, auth: api_pb2.AuthConfig | None, *, pinned: bool, snapshotter: str
) -> str:
    if c.transfer is None:
        raise FailedPreconditionError("no transfer service loaded: images cannot be pulled")
    labels = {LABEL_IMAGE: LABEL_IMAGE_MANAGED}
    if pinned:
        labels[LABEL_PINNED] = LABEL_PINNED_VALUE
    sn = snapshotter or c.config.containerd.snapshotter
    start = time.monotonic()
    progress_timeout = 0.0
    if c.config.image_pull_progress_timeout:
        progress_timeout = parse_go_duration(c.config.image_pull_progress_timeout)
    coro = c.transfer.pull(
        str(ref),
        credentials=credentials(c, auth),
        snapshotter=sn,
        image_name=str(ref),
        image_labels=labels,
        hosts=hosts_config(c),
        max_concurrent_downloads=c.config.max_concurrent_downloads or None,
    )
    try:
        result = await coro
    except TimeoutError as e:
        raise DeadlineExceededError(f"pulling image {str(ref)!r} timed out") from e
    details = await c.images.details(result.target)
    names = references_for(ref, result.target.digest, details.id)
    await ensure_records(c.meta.images, names, result.target, labels)
    log.info(
        "pulled image %s (id %s, %.3fs%s)",
        ref,
        details.id,
        time.monotonic() - start,
        f", progress timeout {progress_timeout}s" if progress_timeout else "",
    )
    return details.id


async def ensure_image(c: CRIService, image: str, *, pinned: bool = False, snapshotter: str = "") -> CRIImage:
    """The image ``image`` refers to, pulled first if it is not present."""
    found = await c.images.find(image)
    if found is None:
        await pull(c, image, pinned=pinned, snapshotter=snapshotter)
        found = await c.images.find(image)
        if found is None:
            raise NotFoundError(f"image {image!r} not found after pulling it")
    return found


async def remove(c: CRIService, image: str) -> None:
    """Remove every name of the image ``image`` resolves to; no such image is success."""
    found = await c.images.resolve(image)
    if found is None:
        return
    names = list(found.references)
    # The id record last: it keeps the content until the other names are gone.
    names.sort(key=lambda n: n.startswith("sha256:"))
    for name in names:
        try:
            await c.meta.images.delete(name)
        except NotFoundError:
            continue
    c.images.forget(found.details.target.digest)
    if c.collect is not None:
        # As containerd's CRI deletes the last name synchronously: the image's content and
        # snapshots are gone when RemoveImage returns (a pull right after fetches again).
        # Shielded: a caller that stops waiting does not cancel the collection.
        await asyncio.shield(c.collect())


def _du(path: str) -> tuple[int, int]:
    """(bytes, inodes) used under ``path``, counting hard links once, not crossing mounts."""
    seen: set[tuple[int, int]] = set()
    total = inodes = 0
    try:
        root_dev = os.lstat(path).st_dev
    except OSError:
        return 0, 0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != root_dev:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            inodes += 1
            total += st.st_blocks * 512
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
    return total, inodes


class FsUsage:
    """Usage of the snapshotter's directory, recomputed at most every ``period`` seconds."""

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self._cache: dict[str, tuple[float, int, int]] = {}
        self._inflight: dict[str, asyncio.Task[tuple[int, int]]] = {}

    async def get(self, path: str) -> tuple[int, int, int]:
        now = time.monotonic()
        hit = self._cache.get(path)
        if hit is not None and now - hit[0] < self.period:
            return time.time_ns(), hit[1], hit[2]
        task = self._inflight.get(path)
        if task is None:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(_du, path))
            self._inflight[path] = task
        try:
            used, inodes = await asyncio.shield(task)
        finally:
            self._inflight.pop(path, None)
        self._cache[path] = (time.monotonic(), used, inodes)
        return time.time_ns(), used, inodes


_fs_usage = FsUsage()


async def fs_info(c: CRIService) -> api_pb2.ImageFsInfoResponse:
    sn = c.config.containerd.snapshotter
    path = str(c.daemon_root / f"io.containerd.snapshotter.v1.{sn}")
    ts, used, inodes = await _fs_usage.get(path)
    usage = api_pb2.FilesystemUsage(timestamp=ts)
    usage.fs_id.mountpoint = path
    usage.used_bytes.value = used
    usage.inodes_used.value = inodes
    return api_pb2.ImageFsInfoResponse(image_filesystems=[usage], container_filesystems=[usage])
