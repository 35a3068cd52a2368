"""CreateContainer: a container in a pod, created but not started.

The spec comes from the image config and the CRI config, in containerd's order:
process args/cwd/env, the pod's files and the CRI mounts, masked and read-only
paths, devices, capabilities, privileges, no_new_privs, read-only rootfs,
resources, cgroup parent, pass-through annotations, OOM score, the pod's
namespaces, user and groups (resolved in the image's /etc/passwd and /etc/group),
seccomp. The container gets a snapshot of its image and a container record
(with the CRI metadata as an extension) and a status file; its task is created by
StartContainer. Any failure undoes what was done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from posixpath import normpath
from typing import Any

from arun import leasectx
from arun.api.cri.runtime.v1 import api_pb2
from arun.core import typeurl
from arun.core.containers import Container as ContainerRecord
from arun.core.containers import RuntimeInfo
from arun.core.mount import Mount, mount_all
from arun.cri import rootfs, user, util
from arun.cri.config import Runtime
from arun.cri.criservice import CRIService
from arun.cri.images.store import CRIImage
from arun.cri.opts import capabilities, seccomp
from arun.cri.opts import spec as copts
from arun.cri.store.container import Container, ContainerMetadata, ContainerStatus, StatusFile
from arun.cri.store.sandbox import Sandbox, SandboxState
from arun.errdefs import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnimplementedError
from arun.mount import LinuxMounter, is_mountpoint
from arun.oci import spec as ocispec

log = logging.getLogger(__name__)

Undo = Callable[[], Awaitable[None]]


async def create_container(
    c: CRIService, req: api_pb2.CreateContainerRequest
) -> api_pb2.CreateContainerResponse:
    config = req.config
    if not req.HasField("config") or not config.HasField("metadata") or not config.metadata.name:
        raise InvalidArgumentError("container config must include metadata with a name")
    sb = c.sandboxes.get(req.pod_sandbox_id)
    if sb.state != SandboxState.READY:
        raise FailedPreconditionError(f"sandbox {sb.id!r} is not ready")
    sandbox_config = sb.config
    name = util.container_name(config.metadata, sandbox_config.metadata)
    cid = util.new_id()
    fingerprint = config.SerializeToString(deterministic=True) + b"\x00" + sb.id.encode()
    claim = c.containers.names.claim(name, cid, fingerprint)
    if not claim.owner:
        log.info("CreateContainer for %r is a retry of a request in flight; waiting for it", name)
        return api_pb2.CreateContainerResponse(container_id=await claim.result())

    async def work() -> str:
        try:
            await _create(c, cid, name, sb, config)
        except BaseException as e:
            claim.failed(e)
            raise
        claim.done(cid)
        return cid

    return api_pb2.CreateContainerResponse(container_id=await c.detached(work, f"create-{cid[:12]}"))


def log_path_of(sandbox_config: api_pb2.PodSandboxConfig, config: api_pb2.ContainerConfig) -> str:
    """The absolute CRI log path ("" for no log); InvalidArgumentError for a path kubelet could
    not have meant (outside the pod's log directory, or in a directory that does not exist)."""
    log_dir = sandbox_config.log_directory
    rel = config.log_path
    if not rel:
        return ""
    if not log_dir:
        if not os.path.isabs(rel):
            raise InvalidArgumentError(f"log path {rel!r} is relative and the pod has no log directory")
        path = os.path.normpath(rel)
    else:
        path = os.path.normpath(os.path.join(log_dir, rel))
        base = os.path.normpath(log_dir)
        if path != base and not path.startswith(base.rstrip("/") + "/"):
            raise InvalidArgumentError(f"log path {rel!r} is outside the pod's log directory {log_dir!r}")
        if path == base:
            raise InvalidArgumentError(f"log path {rel!r} names the pod's log directory itself")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise InvalidArgumentError(f"log directory {parent!r} of log path {rel!r} does not exist")
    if os.path.isdir(path):
        raise InvalidArgumentError(f"log path {path!r} is a directory")
    return path


def process_args(config: api_pb2.ContainerConfig, icfg: dict[str, Any]) -> list[str]:
    command = list(config.command)
    args = list(config.args)
    if not command:
        if not args:
            args = list(icfg.get("Cmd") or [])
        entry = list(icfg.get("Entrypoint") or [])
        if not (len(entry) == 1 and entry[0] == ""):
            command = entry
    if not command and not args:
        raise InvalidArgumentError("no command specified")
    return command + args


def _pod_mounts(c: CRIService, sb: Sandbox, config: api_pb2.ContainerConfig) -> list[api_pb2.Mount]:
    """/etc/hostname, /etc/hosts, /etc/resolv.conf and /dev/shm of the pod (unless the CRI config
    mounts something there itself)."""
    sc = config.linux.security_context
    cri = {os.path.normpath(m.container_path) for m in config.mounts}
    ro = sc.readonly_rootfs
    out = []
    root = c.sandbox_root(sb.id)
    for dest, name in (
        (copts.ETC_HOSTNAME, "hostname"),
        (copts.ETC_HOSTS, "hosts"),
        (copts.RESOLV_CONF, "resolv.conf"),
    ):
        if dest in cri:
            continue
        path = root / name
        if path.exists():
            out.append(api_pb2.Mount(container_path=dest, host_path=str(path), readonly=ro))
    if copts.DEV_SHM not in cri:
        shm = sb.shm_path or str(c.sandbox_state(sb.id) / "shm")
        if sc.namespace_options.ipc == api_pb2.NODE:
            shm = copts.DEV_SHM
        if os.path.exists(shm):
            out.append(api_pb2.Mount(container_path=copts.DEV_SHM, host_path=shm))
    return out


async def container_spec(
    c: CRIService,
    cid: str,
    sb: Sandbox,
    config: api_pb2.ContainerConfig,
    image: CRIImage,
    image_name: str,
    rt: Runtime,
    mounts: list[Mount],
    volumes: list[api_pb2.Mount],
    cri_mounts: list[api_pb2.Mount] | None = None,
) -> tuple[dict[str, Any], list[api_pb2.Mount]]:
    """The OCI spec of container ``cid``, and its CRI mounts as its status reports them."""
    icfg = image.details.image_config
    sandbox_config = sb.config
    s = ocispec.default_spec("k8s.io", cid)
    copts.without_run_mount(s)
    if not rt.base_runtime_spec:
        copts.without_default_security_settings(s)
    s["process"]["args"] = process_args(config, icfg)
    s["process"]["noNewPrivileges"] = False
    cwd = config.working_dir or icfg.get("WorkingDir") or ""
    if cwd:
        s["process"]["cwd"] = cwd
    if config.tty:
        s["process"]["terminal"] = True
    hostname = sandbox_config.hostname
    if not hostname:
        import socket

        hostname = socket.gethostname()
    env = [f"{copts.HOSTNAME_ENV}={hostname}"]
    env += list(icfg.get("Env") or [])
    env += [f"{e.key}={_env_value(e.value)}" for e in config.envs]
    s["process"]["env"] = ocispec.merge_env(s["process"]["env"], env)

    linux = config.linux
    sc = linux.security_context
    extra = _pod_mounts(c, sb, config) + volumes
    handler_rro = c.config.runtime(sb.metadata.runtime_handler) is not None and rro_supported()
    status_mounts = copts.with_cri_mounts(
        s,
        list(config.mounts) if cri_mounts is None else cri_mounts,
        extra,
        rro_supported=handler_rro,
        cgroup_writable=rt.cgroup_writable,
    )
    if not c.config.disable_proc_mount:
        s["linux"]["maskedPaths"] = list(ocispec.DEFAULT_MASKED_PATHS)
        s["linux"]["readonlyPaths"] = list(ocispec.DEFAULT_READONLY_PATHS)
        if sc.masked_paths:
            s["linux"]["maskedPaths"] = list(sc.masked_paths)
        if sc.readonly_paths:
            s["linux"]["readonlyPaths"] = list(sc.readonly_paths)
    copts.with_devices(s, config.devices)
    all_caps = capabilities.all_capabilities()
    copts.with_capabilities(s, sc, all_caps)
    if sc.privileged:
        if not sandbox_config.linux.security_context.privileged:
            raise InvalidArgumentError("no privileged container allowed in sandbox")
        copts.with_privileged(s, all_caps)
        if not rt.privileged_without_host_devices:
            copts.with_host_devices(s)
            copts.with_all_devices_allowed(s)
        elif rt.privileged_without_host_devices_all_devices_allowed:
            copts.with_all_devices_allowed(s)
    copts.without_ambient_caps(s)
    if sc.no_new_privs:
        s["process"]["noNewPrivileges"] = True
    if sc.readonly_rootfs:
        s["root"]["readonly"] = True
    copts.with_resources(s, linux.resources if linux.HasField("resources") else None)
    copts.with_cgroup_parent(s, sandbox_config.linux.cgroup_parent, cid, c.config.systemd_cgroup)
    ann: dict[str, str] = {}
    ann.update(copts.passthrough_annotations(sandbox_config.annotations, rt.pod_annotations))
    ann.update(copts.passthrough_annotations(config.annotations, rt.container_annotations))
    # Namespaces of the pod.
    nsopts = sc.namespace_options
    target_pid = sb.pid
    if nsopts.pid == api_pb2.TARGET:
        target = c.containers.find(nsopts.target_id)
        if target is None or target.sandbox_id != sb.id:
            raise NotFoundError(f"invalid target container: {nsopts.target_id!r} not found in the pod")
        if target.status.get().state() != api_pb2.CONTAINER_RUNNING:
            raise FailedPreconditionError(f"invalid target container: {nsopts.target_id!r} is not running")
        target_pid = target.status.get().pid
    sb_userns = sandbox_config.linux.security_context.namespace_options
    if nsopts.HasField("userns_options") or sb_userns.HasField("userns_options"):
        if nsopts.userns_options.SerializeToString(
            deterministic=True
        ) != sb_userns.userns_options.SerializeToString(deterministic=True):
            raise InvalidArgumentError("user namespace config for sandbox is different from container")
    if linux.resources.oom_score_adj or linux.HasField("resources"):
        copts.with_oom_score_adj(s, linux.resources.oom_score_adj, c.config.restrict_oom_score_adj)
    for ns_type, proc in (("network", "net"), ("ipc", "ipc"), ("uts", "uts")):
        copts.with_namespace_path(s, ns_type, f"/proc/{sb.pid}/ns/{proc}")
    if nsopts.pid != api_pb2.CONTAINER:
        copts.with_namespace_path(s, "pid", f"/proc/{target_pid}/ns/pid")
    if nsopts.HasField("userns_options") and nsopts.userns_options.mode == api_pb2.POD:
        uid_maps, gid_maps = copts.userns_mappings(nsopts.userns_options)
        copts.with_namespace_path(s, "user", f"/proc/{sb.pid}/ns/user")
        s["linux"]["uidMappings"] = uid_maps
        s["linux"]["gidMappings"] = gid_maps
        # runc joins the user namespace first, and then may not join the host's namespaces
        # (owned by the initial user namespace) that a pod on the host's network, IPC or PID
        # namespace shares: the container stays in them by joining none.
        if sb_userns.network == api_pb2.NODE:
            copts.without_namespace(s, "network")
            copts.without_namespace(s, "uts")
            copts.with_host_sys_bind(s)
        if sb_userns.ipc == api_pb2.NODE:
            copts.without_namespace(s, "ipc")
        if sb_userns.pid == api_pb2.NODE:
            copts.without_namespace(s, "pid")
    # User and groups.
    uid_v = sc.run_as_user.value if sc.HasField("run_as_user") else None
    gid_v = sc.run_as_group.value if sc.HasField("run_as_group") else None
    userstr = user.user_string(sc.run_as_username, uid_v, gid_v)
    if not userstr:
        userstr = str(icfg.get("User") or "")
    policy = sc.supplemental_groups_policy
    if policy not in (api_pb2.Merge, api_pb2.Strict):
        raise UnimplementedError(f"SupplementalGroupsPolicy={policy} is not implemented")
    db = user.Passwd()
    merge_user = userstr or "0"
    if (userstr and user.needs_files(userstr)) or policy == api_pb2.Merge:
        files = await rootfs.read_files(mounts, "etc/passwd", "etc/group")
        db = user.Passwd.parse(files["etc/passwd"], files["etc/group"])
    if userstr:
        uid, gid = user.resolve(userstr, db)
    else:
        uid, gid = 0, 0
    gids = [gid]
    if policy == api_pb2.Merge:
        # containerd resolves the image's groups for the user name part only (``uid`` or name).
        name_part = (
            sc.run_as_username or (str(uid_v) if uid_v is not None else "") or merge_user.split(":")[0]
        )
        for g in user.image_groups(name_part, db):
            if g not in gids:
                gids.append(g)
        gids = sorted(set(gids))
    s["process"]["user"] = {"uid": uid, "gid": gid, "additionalGids": gids}
    copts.with_supplemental_groups(s, sc.supplemental_groups)
    s["process"]["user"]["additionalGids"] = sorted(set(s["process"]["user"]["additionalGids"]))
    # AppArmor: this host has none; only an explicit localhost profile is an error.
    _check_apparmor(sc)
    # Seccomp (after capabilities: the default profile depends on them).
    profile = sc.seccomp if sc.HasField("seccomp") else None
    caps = s["process"].get("capabilities", {}).get("bounding", [])
    filt = seccomp.resolve(
        profile, sc.seccomp_profile_path, c.config.unset_seccomp_profile, sc.privileged, caps
    )
    if filt is not None:
        s["linux"]["seccomp"] = filt
    else:
        s["linux"].pop("seccomp", None)
    if config.CDI_devices:
        raise UnimplementedError("CDI devices are not supported")
    ann.update(
        {
            util.ANN_SANDBOX_ID: sb.id,
            util.ANN_SANDBOX_NAMESPACE: sandbox_config.metadata.namespace,
            util.ANN_SANDBOX_UID: sandbox_config.metadata.uid,
            util.ANN_SANDBOX_NAME: sandbox_config.metadata.name,
            util.ANN_CONTAINER_NAME: config.metadata.name,
            util.ANN_IMAGE_NAME: image_name,
            util.ANN_CONTAINER_TYPE: "container",
        }
    )
    s["annotations"] = ann
    return s, status_mounts


def _check_apparmor(sc: api_pb2.LinuxContainerSecurityContext) -> None:
    profile = ""
    if sc.HasField("apparmor"):
        if sc.apparmor.profile_type == api_pb2.SecurityProfile.Localhost:
            profile = "localhost/" + sc.apparmor.localhost_ref
    elif sc.apparmor_profile:
        profile = sc.apparmor_profile
    if profile.startswith("localhost/") and not sc.privileged and not apparmor_enabled():
        raise InvalidArgumentError(
            f"apparmor is not supported on this host: cannot apply profile {profile!r}"
        )


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


_RRO: bool | None = None


def rro_supported() -> bool:
    """Recursive read-only mounts: runc ≥ 1.1 on a kernel with mount_setattr (5.12+)."""
    global _RRO
    if _RRO is None:
        release = os.uname().release.split(".")
        try:
            major, minor = int(release[0]), int(release[1].split("-")[0])
        except (ValueError, IndexError):
            major, minor = 0, 0
        _RRO = (major, minor) >= (5, 12) and runc_supports("rro")
    return _RRO


def runc_supports(option: str) -> bool:
    import subprocess

    try:
        out = subprocess.run(["runc", "features"], capture_output=True, text=True, timeout=5, check=False)
        doc = json.loads(out.stdout or "{}")
    except (OSError, ValueError, subprocess.SubprocessError):
        return False
    return option in (doc.get("mountOptions") or [])


async def _image_volumes(
    c: CRIService, cid: str, config: api_pb2.ContainerConfig, icfg: dict[str, Any]
) -> list[api_pb2.Mount]:
    if c.config.ignore_image_defined_volumes:
        return []
    vols = icfg.get("Volumes") or {}
    cri = {normpath(m.container_path) for m in config.mounts}
    out = []
    for i, dest in enumerate(sorted(vols)):
        d = normpath(dest)
        if d in cri:
            continue
        host = c.container_root(cid) / "volumes" / f"{i}-{os.urandom(4).hex()}"
        await asyncio.to_thread(host.mkdir, 0o755, True, True)
        out.append(api_pb2.Mount(container_path=d, host_path=str(host)))
    return out


async def _create(c: CRIService, cid: str, name: str, sb: Sandbox, config: api_pb2.ContainerConfig) -> None:
    undo: list[Undo] = []
    try:
        image_ref = config.image.image
        if not image_ref:
            raise InvalidArgumentError("container config must name an image")
        image = await c.images.find(image_ref)
        if image is None:
            raise NotFoundError(f"failed to resolve image {image_ref!r}: not found")
        image_name = config.image.user_specified_image or image_ref
        log_path = log_path_of(sb.config, config)
        rt = c.config.runtime(sb.metadata.runtime_handler)

        def mkdirs() -> None:
            c.container_root(cid).mkdir(parents=True, mode=0o755)
            c.container_state(cid).mkdir(parents=True, mode=0o711)

        sn_name = rt.snapshotter or c.config.containerd.snapshotter
        snapshotter = c.meta.snapshotter(sn_name)
        # The new snapshot is held by a lease until the container record refers to it.
        lease = f"cri-container-{cid[:16]}-{os.urandom(4).hex()}"
        await asyncio.gather(
            asyncio.to_thread(mkdirs), c.meta.leases.create(lease, {"containerd.io/gc.expire": _expiry()})
        )

        async def remove_dirs() -> None:
            await asyncio.to_thread(shutil.rmtree, c.container_root(cid), True)
            await asyncio.to_thread(shutil.rmtree, c.container_state(cid), True)

        undo.append(remove_dirs)
        try:
            with leasectx.use(lease):

                async def drop_image_volumes() -> None:
                    await release_image_volumes(c, cid, sn_name)

                undo.append(drop_image_volumes)
                image_vols = await image_volumes(c, cid, config, sn_name)
                labels = {
                    f"containerd.io/gc.ref.snapshot.{sn_name}/{i}": key
                    for i, key in enumerate(image_vols.keys)
                }
                mounts = await snapshotter.prepare(cid, image.details.chain_id, labels=labels or None)

            async def remove_snapshot() -> None:
                with contextlib.suppress(Exception):
                    await snapshotter.remove(cid)

            undo.append(remove_snapshot)
            volumes = await _image_volumes(c, cid, config, image.details.image_config)
            spec, _ = await container_spec(
                c,
                cid,
                sb,
                config,
                image,
                image_name,
                rt,
                [_mount(m) for m in mounts],
                volumes,
                cri_mounts=image_vols.cri_mounts,
            )
            status_mounts = image_vols.status_mounts
            stop_signal = ""
            if config.stop_signal != api_pb2.SIGNAL_RUNTIME_DEFAULT:
                stop_signal = api_pb2.Signal.Name(config.stop_signal).removeprefix("SIGNAL_")
            elif image.details.image_config.get("StopSignal"):
                stop_signal = str(image.details.image_config["StopSignal"])
            meta = ContainerMetadata(
                id=cid,
                name=name,
                sandbox_id=sb.id,
                config=config,
                image_ref=image.id,
                image_name=image_name,
                log_path=log_path,
                stop_signal=stop_signal,
                runtime_handler=sb.metadata.runtime_handler,
                mounts=status_mounts,
            )
            spec_bytes = json.dumps(spec).encode()
            record = ContainerRecord(
                id=cid,
                labels={**dict(config.labels), util.LABEL_KIND: util.KIND_CONTAINER},
                image=image_name,
                runtime=RuntimeInfo(util.runtime_name(rt), util.runtime_options(rt)),
                spec=typeurl.Any(util.SPEC_TYPE_URL, spec_bytes),
                snapshotter=sn_name,
                snapshot_key=cid,
                sandbox_id=sb.id,
                extensions={
                    util.EXT_CONTAINER_METADATA: typeurl.Any(
                        "github.com/containerd/cri/pkg/store/container/Metadata", meta.to_json()
                    )
                },
            )
            await c.meta.containers.create(record)
        finally:
            # Off the request's path: the lease only holds what the record now refers to.
            c.spawn(_drop_lease(c, lease), f"lease-{cid[:12]}")

        async def delete_record() -> None:
            with contextlib.suppress(Exception):
                await c.meta.containers.delete(cid)

        undo.append(delete_record)
        status = await asyncio.to_thread(
            StatusFile.create, c.container_root(cid), ContainerStatus(created_at=util.now_ns())
        )
        container = Container(meta, status)
        container.spec = spec
        container.rootfs = list(mounts)
        c.containers.add(container)
    except BaseException as e:
        for step in reversed(undo):
            try:
                await asyncio.shield(step())
            except Exception as err:
                e.add_note(f"cleanup also failed: {err}")
        raise
    c.emit(cid, sb.id, api_pb2.CONTAINER_CREATED_EVENT)


@dataclass
class ImageVolumes:
    """The container's CRI mounts with image volumes turned into bind mounts of mounted views."""

    cri_mounts: list[api_pb2.Mount]
    status_mounts: list[api_pb2.Mount]
    keys: list[str]


IMAGE_VOLUME_DIR = "image-volumes"


async def image_volumes(
    c: CRIService, cid: str, config: api_pb2.ContainerConfig, sn_name: str
) -> ImageVolumes:
    """Mount every image volume (a mount with ``image`` set) read-only under the container's
    root directory, from a view snapshot of the image (the caller holds a lease)."""
    out = ImageVolumes([], [], [])
    snapshotter = c.meta.snapshotter(sn_name)
    for m in config.mounts:
        if not (m.HasField("image") and m.image.image):
            out.cri_mounts.append(m)
            out.status_mounts.append(m)
            continue
        if not m.readonly:
            raise InvalidArgumentError(f"image volume at {m.container_path!r} must be read-only")
        img = await c.images.find(m.image.image)
        if img is None:
            raise NotFoundError(
                f"image {m.image.image!r} of the image volume at {m.container_path!r} not found"
            )
        i = len(out.keys)
        key = f"{cid}-{IMAGE_VOLUME_DIR}-{i}"
        view = await snapshotter.view(key, img.details.chain_id)
        out.keys.append(key)
        target = c.container_root(cid) / IMAGE_VOLUME_DIR / str(i)

        def mount_view(target: Path = target, view: Any = view) -> None:
            target.mkdir(parents=True, exist_ok=True)
            mount_all(LinuxMounter(), [_mount(v) for v in view], str(target))

        await asyncio.to_thread(mount_view)
        host = target
        if m.image_sub_path:
            host = (target / m.image_sub_path.lstrip("/")).resolve()
            if not str(host).startswith(str(target.resolve()) + "/") or not host.exists():
                raise NotFoundError(
                    f"sub path {m.image_sub_path!r} does not exist in image {m.image.image!r}"
                )
        bind = api_pb2.Mount()
        bind.CopyFrom(m)
        bind.ClearField("image")
        bind.ClearField("image_sub_path")
        bind.host_path = str(host)
        out.cri_mounts.append(bind)
        status = api_pb2.Mount()
        status.CopyFrom(m)
        status.image.image_ref = img.id
        out.status_mounts.append(status)
    return out


async def release_image_volumes(c: CRIService, cid: str, sn_name: str) -> None:
    """Unmount the container's image volumes and remove their views (idempotent)."""
    base = c.container_root(cid) / IMAGE_VOLUME_DIR

    def unmount() -> list[str]:
        found = []
        if base.is_dir():
            for d in sorted(base.iterdir()):
                # A one-layer image's view is a bind mount: os.path.ismount cannot tell.
                while is_mountpoint(str(d)):
                    LinuxMounter().unmount(str(d), 2)
                found.append(d.name)
        return found

    indices = await asyncio.to_thread(unmount)
    snapshotter = c.meta.snapshotter(sn_name)
    for i in indices:
        with contextlib.suppress(Exception):
            await snapshotter.remove(f"{cid}-{IMAGE_VOLUME_DIR}-{i}")


async def _drop_lease(c: CRIService, lease: str) -> None:
    with contextlib.suppress(Exception):
        await c.meta.leases.delete(lease)


def _mount(m: Any) -> Mount:
    return Mount(type=m.type, source=m.source, target=getattr(m, "target", ""), options=tuple(m.options))


def _expiry() -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _env_value(v: bytes | str) -> str:
    return v.decode(errors="surrogateescape") if isinstance(v, bytes) else v
