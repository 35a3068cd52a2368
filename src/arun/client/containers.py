"""Container records and handles: create one from an image, start tasks in it, remove it.

``Containers.create`` does what containerd's Go client does for ``ctr run``:
it unpacks the image if its snapshot is missing, builds the OCI spec from the
image config with ``arun.oci.spec`` (entrypoint/cmd, env, working dir and
user), prepares a writable snapshot keyed by the container id on the image's
chain ID, and writes the container record (runtime, spec, snapshot) — all
under one lease, so nothing is collected half-way. If the record cannot be
created, the snapshot is removed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arun import errdefs, identifiers
from arun.client import _convert
from arun.client.cio import Input, IOSet, Output
from arun.client.images import ImageManifest, resolve_manifest
from arun.client.tasks import Task
from arun.client.types import ContainerInfo, Mount, RuncOptions
from arun.oci import spec as ocispec

if TYPE_CHECKING:
    from arun.client.client import Client

__all__ = ["Container", "Containers", "SpecOpt"]

_SERVICE = "/containerd.services.containers.v1.Containers/"
SpecOpt = Callable[[dict[str, Any]], None]


def _oci_mount(m: Mount | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(m, Mount):
        if not m.target:
            raise errdefs.InvalidArgumentError(f"mount of {m.source!r}: no target")
        return {"destination": m.target, "type": m.type, "source": m.source, "options": list(m.options)}
    if "destination" not in m:
        raise errdefs.InvalidArgumentError(f"mount {dict(m)!r}: no destination")
    return dict(m)


async def _image_user(client: Client, manifest: ImageManifest, user: str, snapshotter: str) -> SpecOpt:
    """The spec option for the image's ``User``; names are looked up in the image's own files."""
    name, _, group = user.partition(":")
    if name.isdigit() and (not group or group.isdigit()):
        return ocispec.with_user_ids(int(name), int(group) if group else 0)
    from arun.core.mount import Mount as CoreMount
    from arun.mount import temp_mount

    sn = client.snapshots(snapshotter)
    key = f"user-lookup-{os.urandom(6).hex()}"
    mounts = await sn.view(key, manifest.chain_id)
    try:
        core = [CoreMount(type=m.type, source=m.source, options=tuple(m.options)) for m in mounts]
        async with temp_mount(core) as root:
            uid, gid, extra = ocispec.resolve_user(Path(root), user)
    finally:
        with contextlib.suppress(errdefs.ArunError):
            await sn.remove(key)
    return ocispec.with_user_ids(uid, gid, extra)


class Container:
    """A handle on one container record."""

    def __init__(self, client: Client, info: ContainerInfo) -> None:
        self._c = client
        self._info = info

    @property
    def id(self) -> str:
        """The container's id."""
        return self._info.id

    @property
    def cached_info(self) -> ContainerInfo:
        """The record as last fetched."""
        return self._info

    def __repr__(self) -> str:
        return f"<Container {self.id!r} image={self._info.image!r}>"

    async def info(self) -> ContainerInfo:
        """The container's record, read again from the daemon (and cached)."""
        self._info = await self._c.containers.info(self.id)
        return self._info

    async def spec(self) -> Mapping[str, Any]:
        """The container's OCI runtime spec, as a mapping."""
        return (await self.info()).spec

    async def new_task(
        self,
        *,
        stdin: Input = None,
        stdout: Output = None,
        stderr: Output = None,
        tty: bool | None = None,
        log_file: str | None = None,
    ) -> Task:
        """Create the container's task (created, not started), with its stdio through FIFOs.

        ``tty`` defaults to what the container's spec says (``process.terminal``);
        with a terminal there is no separate stderr. ``log_file`` (an absolute
        path) instead has the shim append stdout and stderr to that file
        (``file://`` stdio, containerd's ``cio.LogFile``); no FIFOs then.
        """
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        info = await self.info()
        terminal = bool((info.spec.get("process") or {}).get("terminal")) if tty is None else tty
        rootfs: list[Any] = []
        if info.snapshot_key:
            if not info.snapshotter:
                raise errdefs.InvalidArgumentError(
                    f"container {self.id!r} has a snapshot key but no snapshotter"
                )
            mounts = await self._c.snapshots(info.snapshotter).mounts(info.snapshot_key)
            rootfs = [_convert.mount_pb(m) for m in mounts]
        if log_file is not None:
            if stdin is not None or stdout is not None or stderr is not None:
                raise errdefs.InvalidArgumentError("new_task: log_file excludes stdin, stdout and stderr")
            if not os.path.isabs(log_file):
                raise errdefs.InvalidArgumentError(f"log file {log_file!r} must be an absolute path")
        io = IOSet(
            self.id,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            terminal=terminal,
            fifo_root=self._c.fifo_dir,
            owner=self._c._iosets,
        )
        try:
            req = tasks_pb2.CreateTaskRequest(
                container_id=self.id,
                rootfs=rootfs,
                stdin=io.paths.stdin,
                stdout=f"file://{log_file}" if log_file else io.paths.stdout,
                stderr=f"file://{log_file}" if log_file and not terminal else io.paths.stderr,
                terminal=terminal,
            )
            r = await self._c._unary(
                "/containerd.services.tasks.v1.Tasks/Create", req, tasks_pb2.CreateTaskResponse
            )
        except BaseException:
            io.close()
            raise
        return Task(self._c, self.id, io, int(r.pid), info.spec)

    async def task(self) -> Task:
        """The container's existing task, without stdio (NotFoundError when there is none)."""
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        r = await self._c._unary(
            "/containerd.services.tasks.v1.Tasks/Get",
            tasks_pb2.GetRequest(container_id=self.id),
            tasks_pb2.GetResponse,
        )
        return Task(self._c, self.id, None, int(r.process.pid), self._info.spec)

    async def delete(self, *, cleanup_snapshot: bool = True) -> None:
        """Remove the record (and its snapshot); FailedPreconditionError while a task exists."""
        await self._c.containers.delete(self.id, cleanup_snapshot=cleanup_snapshot)

    async def set_labels(self, labels: Mapping[str, str]) -> ContainerInfo:
        """Set (empty value: remove) these labels."""
        from google.protobuf import field_mask_pb2

        from arun.api.containerd.services.containers.v1 import containers_pb2

        msg = containers_pb2.Container(id=self.id, labels={k: v for k, v in labels.items() if v})
        r = await self._c._unary(
            _SERVICE + "Update",
            containers_pb2.UpdateContainerRequest(
                container=msg, update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels])
            ),
            containers_pb2.UpdateContainerResponse,
        )
        self._info = _convert.container(r.container)
        return self._info


class Containers:
    """Container records in the client's namespace."""

    def __init__(self, client: Client) -> None:
        self._c = client

    async def info(self, id: str) -> ContainerInfo:
        """The record of container ``id`` (NotFoundError when there is none)."""
        from arun.api.containerd.services.containers.v1 import containers_pb2

        r = await self._c._unary(
            _SERVICE + "Get", containers_pb2.GetContainerRequest(id=id), containers_pb2.GetContainerResponse
        )
        return _convert.container(r.container)

    async def get(self, id: str) -> Container:
        """A handle on container ``id``; NotFoundError if there is none."""
        return Container(self._c, await self.info(id))

    async def list(self, *filters: str) -> list[ContainerInfo]:
        """The namespace's container records matching any of ``filters`` (containerd's filter syntax)."""
        from arun.api.containerd.services.containers.v1 import containers_pb2

        r = await self._c._unary(
            _SERVICE + "List",
            containers_pb2.ListContainersRequest(filters=list(filters)),
            containers_pb2.ListContainersResponse,
        )
        return sorted((_convert.container(c) for c in r.containers), key=lambda c: c.id)

    async def create(
        self,
        id: str,
        image: str | None = None,
        *,
        command: Sequence[str] | None = None,
        env: Sequence[str] | Mapping[str, str] | None = None,
        mounts: Sequence[Mount | Mapping[str, Any]] = (),
        runtime: str | None = None,
        runtime_options: RuncOptions | None = None,
        snapshotter: str | None = None,
        labels: Mapping[str, str] | None = None,
        tty: bool = False,
        cwd: str | None = None,
        user: str | None = None,
        hostname: str | None = None,
        net_host: bool = False,
        readonly_rootfs: bool = False,
        annotations: Mapping[str, str] | None = None,
        spec_opts: Sequence[SpecOpt] = (),
        rootfs: str | None = None,
    ) -> Container:
        """Create container ``id`` from ``image`` (a name in this namespace).

        ``command`` replaces the image's Cmd (the Entrypoint stays, as with
        ``docker run``); ``env`` adds to the image's Env; ``mounts`` are OCI
        mounts (``Mount(type="bind", source=..., target=..., options=("rbind","ro"))``).
        ``rootfs`` (a host directory) instead of an image runs without a snapshot.
        ``spec_opts`` are extra ``arun.oci.spec`` options applied last.
        """
        from arun.api.containerd.services.containers.v1 import containers_pb2

        identifiers.validate(id)
        if (image is None) == (rootfs is None):
            raise errdefs.InvalidArgumentError("create: give exactly one of image or rootfs")
        ns = self._c.namespace
        sname = snapshotter or self._c.snapshotter
        opts: list[SpecOpt] = []
        manifest: ImageManifest | None = None
        if image is not None:
            info = await self._c.images.get(image)
            manifest = await resolve_manifest(self._c, info.target)
            opts.append(ocispec.with_image_config(manifest.config, list(command) if command else None))
        elif command:
            opts.append(ocispec.with_process_args(*command))
        if rootfs is not None:
            opts.append(ocispec.with_rootfs_path(rootfs))
        if env:
            pairs = [f"{k}={v}" for k, v in env.items()] if isinstance(env, Mapping) else list(env)
            opts.append(ocispec.with_env(pairs))
        if cwd:
            opts.append(ocispec.with_process_cwd(cwd))
        if tty:
            opts.append(ocispec.with_tty())
        if hostname:
            opts.append(ocispec.with_hostname(hostname))
        if net_host:
            opts.append(ocispec.with_host_namespace("network"))
            host_files = [
                {"destination": p, "type": "bind", "source": p, "options": ["rbind", "ro"]}
                for p in ("/etc/hosts", "/etc/resolv.conf")
                if await asyncio.to_thread(os.path.exists, p)
            ]
            opts.append(ocispec.with_mounts(host_files))
        if mounts:
            opts.append(ocispec.with_mounts([_oci_mount(m) for m in mounts]))
        if readonly_rootfs:
            opts.append(ocispec.with_readonly_rootfs)
        if annotations:
            opts.append(ocispec.with_annotations(annotations))
        opts.extend(spec_opts)
        rt_name = runtime or self._c.runtime
        rt_opts = runtime_options if runtime_options is not None else self._c.runtime_options
        async with self._c.lease():
            snapshot_key = ""
            if manifest is not None:
                from arun.client.unpack import unpack

                parent = await unpack(self._c, manifest, sname)
                want_user = (
                    user if user is not None else str((manifest.config.get("config") or {}).get("User") or "")
                )
                if want_user:
                    opts.insert(1, await _image_user(self._c, manifest, want_user, sname))
                await self._c.snapshots(sname).prepare(id, parent)
                snapshot_key = id
            elif user:
                uid, _, gid = user.partition(":")
                if not uid.isdigit() or (gid and not gid.isdigit()):
                    raise errdefs.InvalidArgumentError(
                        f"user {user!r}: without an image only uid[:gid] works"
                    )
                opts.append(ocispec.with_user_ids(int(uid), int(gid or 0)))
            try:
                spec = ocispec.build(ns, id, *opts)
                msg = containers_pb2.Container(
                    id=id,
                    image=image or "",
                    labels=dict(labels or {}),
                    spec=_convert.pack_json(_convert.SPEC_TYPE_URL, spec),
                    snapshotter=sname if snapshot_key else "",
                    snapshot_key=snapshot_key,
                )
                msg.runtime.name = rt_name
                if rt_opts is not None:
                    msg.runtime.options.CopyFrom(_convert.runc_options_pb(rt_opts))
                r = await self._c._unary(
                    _SERVICE + "Create",
                    containers_pb2.CreateContainerRequest(container=msg),
                    containers_pb2.CreateContainerResponse,
                )
            except BaseException:
                if snapshot_key:
                    with contextlib.suppress(errdefs.ArunError):
                        await self._c.snapshots(sname).remove(snapshot_key)
                raise
        return Container(self._c, _convert.container(r.container))

    async def delete(self, id: str, *, cleanup_snapshot: bool = True) -> None:
        """Remove container ``id`` and (``cleanup_snapshot``) its writable snapshot.

        FailedPreconditionError while the container has a task (checked here, as
        containerd's Go client does: the containers service itself does not).
        """
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.containers.v1 import containers_pb2
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        info = await self.info(id)
        try:
            await self._c._unary(
                "/containerd.services.tasks.v1.Tasks/Get",
                tasks_pb2.GetRequest(container_id=id),
                tasks_pb2.GetResponse,
            )
        except (errdefs.NotFoundError, errdefs.UnimplementedError):
            pass  # no task (a daemon without a tasks service has none)
        else:
            raise errdefs.FailedPreconditionError(f"container {id!r} has a task: delete the task first")
        await self._c._unary(
            _SERVICE + "Delete", containers_pb2.DeleteContainerRequest(id=id), empty_pb2.Empty
        )
        if cleanup_snapshot and info.snapshot_key and info.snapshotter:
            with contextlib.suppress(errdefs.NotFoundError):
                await self._c.snapshots(info.snapshotter).remove(info.snapshot_key)
