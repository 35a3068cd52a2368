"""RunPodSandbox: a pod's network, files and pause container.

The steps, each undone (in reverse) if a later one fails:

1. validate the config and reserve the pod's name (a kubelet retry with the same
   name and config waits for this request and gets its answer);
2. make sure the sandbox (pause) image is present, pulling it if not;
3. the pod's directories;
4. unless the pod uses the host network: a network namespace attached to the CNI
   networks (IPs, routes and DNS in the result);
5. the files every container of the pod shares: hostname, hosts, resolv.conf
   (from the DNS config, else the host's) and a tmpfs for /dev/shm (unless host IPC);
6. the pause container's spec, its snapshot (under a lease until the container
   record holds it) and its container record, with the sandbox metadata as an
   extension so that a restarted daemon finds the pod again;
7. the pause task in the pod's shim, started; from now on the pod is READY and its
   exit is watched.

The work runs detached from the request, so a client that gives up (kubelet's own
timeout) does not leave it half done; its retry gets the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from arun import netns as netnslib
from arun.api.cri.runtime.v1 import api_pb2
from arun.cni import PodNetworkRequest, PodNetworkResult, PortMapping
from arun.cni.types import BandWidth, DNSConfig
from arun.core import typeurl
from arun.core.containers import Container as ContainerRecord
from arun.core.containers import RuntimeInfo
from arun.core.mount import Mount
from arun.core.runtime import IO, CreateOpts
from arun.cri import userns as usernslib
from arun.cri import util
from arun.cri.config import Runtime
from arun.cri.criservice import CRIService
from arun.cri.images.store import CRIImage
from arun.cri.opts import capabilities, seccomp
from arun.cri.opts import spec as copts
from arun.cri.store.sandbox import Sandbox, SandboxMetadata, SandboxState
from arun.errdefs import FailedPreconditionError, InvalidArgumentError, UnimplementedError
from arun.mount import LinuxMounter, is_mountpoint
from arun.oci import spec as ocispec

log = logging.getLogger(__name__)

Undo = Callable[[], Awaitable[None]]


async def run_pod_sandbox(c: CRIService, req: api_pb2.RunPodSandboxRequest) -> api_pb2.RunPodSandboxResponse:
    config = req.config
    md = config.metadata
    if not req.HasField("config") or not config.HasField("metadata"):
        raise InvalidArgumentError("sandbox config must include metadata")
    if not md.name or not md.uid or not md.namespace:
        raise InvalidArgumentError("sandbox metadata must include name, uid and namespace")
    handler = req.runtime_handler
    rt = c.config.runtime(handler)
    if rt.sandboxer not in ("", "podsandbox"):
        raise UnimplementedError(f"sandboxer {rt.sandboxer!r} is not supported")
    userns = config.linux.security_context.namespace_options.userns_options
    if config.linux.security_context.namespace_options.HasField("userns_options"):
        copts.userns_mappings(userns)  # a malformed mapping is the clearer error
        if userns.mode == api_pb2.POD:
            why = await c.userns_unsupported()
            if why:
                raise FailedPreconditionError(f"user namespaces for pods are not supported here: {why}")
    name = util.sandbox_name(md)
    sid = util.new_id()
    fingerprint = config.SerializeToString(deterministic=True) + b"\x00" + handler.encode()
    claim = c.sandboxes.names.claim(name, sid, fingerprint)
    if not claim.owner:
        log.info("RunPodSandbox for %r is a retry of a request in flight; waiting for it", name)
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=await claim.result())

    async def work() -> str:
        try:
            await _run(c, sid, name, config, handler, rt)
        except BaseException as e:
            claim.failed(e)
            raise
        claim.done(sid)
        return sid

    return api_pb2.RunPodSandboxResponse(pod_sandbox_id=await c.detached(work, f"runp-{sid[:12]}"))


async def _undo_all(undo: list[Undo], cause: BaseException) -> None:
    for step in reversed(undo):
        try:
            await step()
        except Exception as e:
            log.warning("undo after failed RunPodSandbox: %s", e)
            cause.add_note(f"cleanup also failed: {e}")


def network_request(sid: str, config: api_pb2.PodSandboxConfig, cgroup_parent: str = "") -> PodNetworkRequest:
    md = config.metadata
    ports = [
        PortMapping(
            host_port=p.host_port,
            container_port=p.container_port,
            protocol=api_pb2.Protocol.Name(p.protocol).lower(),
            host_ip=p.host_ip,
        )
        for p in config.port_mappings
        if p.host_port
    ]
    dns = None
    if config.HasField("dns_config"):
        d = config.dns_config
        dns = DNSConfig(servers=tuple(d.servers), searches=tuple(d.searches), options=tuple(d.options))
    bandwidth = None
    ann = config.annotations
    ingress = ann.get("kubernetes.io/ingress-bandwidth")
    egress = ann.get("kubernetes.io/egress-bandwidth")
    if ingress or egress:
        bandwidth = _bandwidth(ingress, egress)
    return PodNetworkRequest(
        sandbox_id=sid,
        pod_namespace=md.namespace,
        pod_name=md.name,
        pod_uid=md.uid,
        port_mappings=ports,
        dns=dns,
        bandwidth=bandwidth,
        annotations=dict(config.annotations),
        cgroup_parent=cgroup_parent,
    )


_QUANTITY = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def _quantity(q: str) -> int:
    for suffix in sorted(_QUANTITY, key=len, reverse=True):
        if suffix and q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * _QUANTITY[suffix])
    return int(float(q))


def _bandwidth(ingress: str | None, egress: str | None) -> BandWidth | None:
    try:
        rin = _quantity(ingress) if ingress else 0
        rout = _quantity(egress) if egress else 0
    except ValueError as e:
        raise InvalidArgumentError(f"invalid bandwidth annotation: {e}") from e
    burst = 2**31 - 1
    return BandWidth(
        ingress_rate=rin,
        ingress_burst=burst if rin else 0,
        egress_rate=rout,
        egress_burst=burst if rout else 0,
    )


def dns_content(dns: api_pb2.DNSConfig) -> str:
    out = ""
    if dns.searches:
        out += "search " + " ".join(dns.searches) + "\n"
    if dns.servers:
        out += "".join(f"nameserver {s}\n" for s in dns.servers)
    if dns.options:
        out += "options " + " ".join(dns.options) + "\n"
    return out


def _setup_files(c: CRIService, sb: Sandbox, config: api_pb2.PodSandboxConfig) -> None:
    """hostname, hosts, resolv.conf under the sandbox root; the /dev/shm tmpfs under its state."""
    root = c.sandbox_root(sb.id)
    hostname = config.hostname or socket.gethostname()
    (root / "hostname").write_text(hostname + "\n")
    os.chmod(root / "hostname", 0o644)
    try:
        shutil.copyfile("/etc/hosts", root / "hosts")
    except FileNotFoundError:
        (root / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    os.chmod(root / "hosts", 0o644)
    resolv = root / "resolv.conf"
    if config.HasField("dns_config"):
        resolv.write_text(dns_content(config.dns_config))
    else:
        try:
            shutil.copyfile("/etc/resolv.conf", resolv)
        except FileNotFoundError:
            resolv.write_text("")
    os.chmod(resolv, 0o644)
    ns = config.linux.security_context.namespace_options
    if ns.ipc == api_pb2.NODE:
        if not os.path.exists(copts.DEV_SHM):
            raise InvalidArgumentError(f"host {copts.DEV_SHM!r} is not available for host ipc")
        sb.shm_path = copts.DEV_SHM
    else:
        shm = c.sandbox_state(sb.id) / "shm"
        shm.mkdir(mode=0o700, exist_ok=True)
        LinuxMounter().mount(
            Mount(
                type="tmpfs",
                source="shm",
                options=("nosuid", "nodev", "noexec", f"mode=1777,size={copts.DEFAULT_SHM_SIZE}"),
            ),
            str(shm),
        )
        sb.shm_path = str(shm)


def pod_userns(config: api_pb2.PodSandboxConfig) -> bool:
    """Whether the pod has its own user namespace (mode POD)."""
    ns = config.linux.security_context.namespace_options
    return ns.HasField("userns_options") and ns.userns_options.mode == api_pb2.POD


def pinned_userns(c: CRIService, sid: str) -> str:
    """The file the pod's user namespace is pinned at (mode POD)."""
    return str(c.sandbox_state(sid) / usernslib.PINNED_USERNS)


def cleanup_files(c: CRIService, sid: str) -> None:
    """Unmount the pod's /dev/shm and pinned user namespace, remove its directories (idempotent)."""
    usernslib.unpin(pinned_userns(c, sid))
    shm = c.sandbox_state(sid) / "shm"
    while is_mountpoint(str(shm)):
        LinuxMounter().unmount(str(shm), 2)  # MNT_DETACH
    shutil.rmtree(c.sandbox_state(sid), ignore_errors=True)
    shutil.rmtree(c.sandbox_root(sid), ignore_errors=True)


def sandbox_spec(
    c: CRIService,
    sb: Sandbox,
    config: api_pb2.PodSandboxConfig,
    image: CRIImage,
    rt: Runtime,
) -> dict[str, Any]:
    sid = sb.id
    icfg = image.details.image_config
    s = ocispec.default_spec("k8s.io", sid)
    copts.without_run_mount(s)
    copts.without_default_security_settings(s)
    s["root"] = {"path": "rootfs", "readonly": True}
    s["process"]["env"] = ocispec.merge_env(s["process"]["env"], icfg.get("Env") or [])
    if config.hostname:
        s["hostname"] = config.hostname
    if icfg.get("WorkingDir"):
        s["process"]["cwd"] = icfg["WorkingDir"]
    args = list(icfg.get("Entrypoint") or []) + list(icfg.get("Cmd") or [])
    if not args:
        raise InvalidArgumentError(f"invalid empty entrypoint and cmd in the sandbox image {image.id}")
    s["process"]["args"] = args
    linux = config.linux
    copts.with_cgroup_parent(s, linux.cgroup_parent, sid, c.config.systemd_cgroup)
    sc = linux.security_context
    nsopts = sc.namespace_options
    if nsopts.network == api_pb2.NODE:
        copts.without_namespace(s, "network")
        copts.without_namespace(s, "uts")
    else:
        copts.with_namespace_path(s, "network", sb.metadata.netns_path)
    if nsopts.pid == api_pb2.NODE:
        copts.without_namespace(s, "pid")
    if nsopts.ipc == api_pb2.NODE:
        copts.without_namespace(s, "ipc")
    if nsopts.HasField("userns_options"):
        uids, gids = copts.userns_mappings(nsopts.userns_options)
        if nsopts.userns_options.mode == api_pb2.POD:
            # The pod's user namespace, made and pinned before the pause container; runc still
            # wants the maps (for the ids of what it creates in the root filesystem).
            copts.with_namespace_path(s, "user", pinned_userns(c, sid))
            s["linux"]["uidMappings"] = uids
            s["linux"]["gidMappings"] = gids
        else:
            copts.without_namespace(s, "user")
    s["mounts"] = [m for m in s["mounts"] if os.path.normpath(m["destination"]) != copts.DEV_SHM]
    ro = ["rbind", "ro", "nosuid", "nodev", "noexec"]
    s["mounts"].append(
        {"destination": copts.DEV_SHM, "type": "bind", "source": sb.shm_path, "options": list(ro)}
    )
    s["mounts"].append(
        {
            "destination": copts.RESOLV_CONF,
            "type": "bind",
            "source": str(c.sandbox_root(sid) / "resolv.conf"),
            "options": list(ro),
        }
    )
    if nsopts.network == api_pb2.NODE and pod_userns(config):
        copts.with_host_sys_bind(s)
    sysctls = dict(linux.sysctls)
    if nsopts.network != api_pb2.NODE:
        if c.config.enable_unprivileged_ports and "net.ipv4.ip_unprivileged_port_start" not in sysctls:
            sysctls["net.ipv4.ip_unprivileged_port_start"] = "0"
        if (
            c.config.enable_unprivileged_icmp
            and "net.ipv4.ping_group_range" not in sysctls
            and not (nsopts.HasField("userns_options") and nsopts.userns_options.mode == api_pb2.POD)
        ):
            sysctls["net.ipv4.ping_group_range"] = "0 2147483647"
    copts.with_sysctls(sysctls)(s)
    s["linux"].setdefault("resources", {}).setdefault("cpu", {})["shares"] = copts.DEFAULT_SANDBOX_CPU_SHARES
    ann: dict[str, str] = {}
    if linux.HasField("resources"):
        r = linux.resources
        ann[util.ANN_SANDBOX_CPU_PERIOD] = str(r.cpu_period)
        ann[util.ANN_SANDBOX_CPU_QUOTA] = str(r.cpu_quota)
        ann[util.ANN_SANDBOX_CPU_SHARES] = str(r.cpu_shares)
        ann[util.ANN_SANDBOX_MEMORY] = str(r.memory_limit_in_bytes)
    copts.with_oom_score_adj(s, copts.DEFAULT_SANDBOX_OOM_ADJ, c.config.restrict_oom_score_adj)
    ann.update(copts.passthrough_annotations(config.annotations, rt.pod_annotations))
    ann.update(
        {
            util.ANN_SANDBOX_ID: sid,
            util.ANN_SANDBOX_NAMESPACE: config.metadata.namespace,
            util.ANN_SANDBOX_UID: config.metadata.uid,
            util.ANN_SANDBOX_NAME: config.metadata.name,
            util.ANN_SANDBOX_LOG_DIR: config.log_directory,
            util.ANN_SANDBOX_IMAGE_NAME: c.config.sandbox_image,
            util.ANN_CONTAINER_TYPE: "sandbox",
        }
    )
    s["annotations"] = ann
    # Security: seccomp and the user of the pause process.
    profile = sc.seccomp if sc.HasField("seccomp") else None
    caps = (
        s["process"]["capabilities"]["bounding"]
        if not sc.privileged
        else list(capabilities.all_capabilities())
    )
    filt = seccomp.resolve(
        profile, sc.seccomp_profile_path, c.config.unset_seccomp_profile, sc.privileged, caps
    )
    if filt is not None:
        s["linux"]["seccomp"] = filt
    from arun.cri.user import user_string

    userstr = user_string(
        "",
        sc.run_as_user.value if sc.HasField("run_as_user") else None,
        sc.run_as_group.value if sc.HasField("run_as_group") else None,
    ) or str(icfg.get("User") or "")
    if userstr:
        parts = userstr.split(":")
        if all(p.isdigit() for p in parts) and len(parts) <= 2:
            uid = int(parts[0])
            gid = int(parts[1]) if len(parts) == 2 else 0
            s["process"]["user"] = {"uid": uid, "gid": gid, "additionalGids": [gid]}
        else:
            raise InvalidArgumentError(f"sandbox image user {userstr!r} must be numeric")
    else:
        s["process"]["user"]["additionalGids"] = [0]
    copts.with_supplemental_groups(s, sc.supplemental_groups)
    return s


async def _run(
    c: CRIService, sid: str, name: str, config: api_pb2.PodSandboxConfig, handler: str, rt: Runtime
) -> None:
    from arun.cri.images.service import ensure_image

    undo: list[Undo] = []
    try:
        image = await ensure_image(c, c.config.sandbox_image, pinned=True)
        meta = SandboxMetadata(
            id=sid,
            name=name,
            config=config,
            runtime_handler=handler,
            runtime_type=util.runtime_name(rt),
            created_at=util.now_ns(),
            image=image.id,
        )
        sb = Sandbox(meta)

        def mkdirs() -> None:
            c.sandbox_root(sid).mkdir(parents=True, mode=0o755)
            c.sandbox_state(sid).mkdir(parents=True, mode=0o711)

        await asyncio.to_thread(mkdirs)

        async def remove_dirs() -> None:
            await asyncio.to_thread(cleanup_files, c, sid)

        undo.append(remove_dirs)

        nsopts = config.linux.security_context.namespace_options
        netreq = network_request(sid, config, config.linux.cgroup_parent)
        network: asyncio.Task[PodNetworkResult] | None = None
        if pod_userns(config):
            # The pod's user namespace (and its network namespace, which must belong to it),
            # pinned before anything runs in them; cleanup_files (remove_dirs) unpins it.
            uids, gids = copts.userns_mappings(nsopts.userns_options)
            netns_dir = c.network.netns_dir if nsopts.network != api_pb2.NODE else None
            netns_path = await asyncio.shield(
                asyncio.to_thread(usernslib.create_namespaces, pinned_userns(c, sid), uids, gids, netns_dir)
            )
            if netns_path:
                meta.netns_path = netns_path

                async def remove_netns() -> None:
                    await netnslib.remove(netns_path)

                undo.append(remove_netns)
        if nsopts.network != api_pb2.NODE:
            # The namespace first (the pause container's spec names it); the CNI plugins then
            # attach it while the pause container is prepared and started: nothing in the pod
            # needs the network before RunPodSandbox returns.
            if not meta.netns_path:
                meta.netns_path = (await netnslib.create(c.network.netns_dir)).path
            ns_path = meta.netns_path

            async def destroy_network() -> None:
                if network is not None and not network.done():
                    network.cancel()
                if network is not None:
                    with contextlib.suppress(BaseException):
                        await network
                await c.network.destroy(netreq, meta.netns_path)

            undo.append(destroy_network)
            network = asyncio.create_task(c.network.setup(netreq, ns_path), name=f"cni-add-{sid[:12]}")

        await asyncio.to_thread(_setup_files, c, sb, config)
        spec = sandbox_spec(c, sb, config, image, rt)
        sb.spec = spec
        spec_bytes = json.dumps(spec).encode()

        sn_name = rt.snapshotter or c.config.containerd.snapshotter
        snapshotter = c.meta.snapshotter(sn_name)
        # The record first: it names the snapshot, so garbage collection keeps the snapshot from
        # the moment it exists (no lease needed); undone in the reverse order.
        options = util.runtime_options(rt)
        record = ContainerRecord(
            id=sid,
            labels={**dict(config.labels), util.LABEL_KIND: util.KIND_SANDBOX},
            image=c.config.sandbox_image,
            runtime=RuntimeInfo(util.runtime_name(rt), options),
            spec=typeurl.Any(util.SPEC_TYPE_URL, spec_bytes),
            snapshotter=sn_name,
            snapshot_key=sid,
            extensions={util.EXT_SANDBOX_METADATA: _metadata_any(meta)},
        )
        await c.meta.containers.create(record)

        async def delete_record() -> None:
            with contextlib.suppress(Exception):
                await c.meta.containers.delete(sid)

        undo.append(delete_record)
        mounts = await snapshotter.prepare(sid, image.details.chain_id, labels=None)

        async def remove_snapshot() -> None:
            with contextlib.suppress(Exception):
                await snapshotter.remove(sid)

        undo.append(remove_snapshot)

        task = await create_task(
            c,
            sid,
            sid,
            config,
            CreateOpts(
                spec=spec_bytes,
                rootfs=mounts,
                io=IO(),
                runtime=util.runtime_name(rt),
                runtime_options=options,
            ),
        )

        async def delete_task() -> None:
            with contextlib.suppress(Exception):
                await task.kill(9, all=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task.wait(), 10)
            with contextlib.suppress(Exception):
                await c.runtime.delete(sid)

        undo.append(delete_task)
        sb.pid = await task.start()
        if network is not None:
            # The IPs are not written to the record: after a restart they come back from the
            # CNI result cache (see restart.py).
            result = await network
            meta.ip, meta.additional_ips = result.pod_ips(c.config.cni.ip_pref or "ipv4")
            meta.cni_result = result.to_json()
        sb.task = task
        sb.state = SandboxState.READY
        c.sandboxes.add(sb)
    except BaseException as e:
        await asyncio.shield(_undo_all(undo, e))
        raise
    c.monitor_sandbox(sb)
    c.emit(sid, sid, api_pb2.CONTAINER_CREATED_EVENT)
    c.emit(sid, sid, api_pb2.CONTAINER_STARTED_EVENT)


async def create_task(
    c: CRIService, task_id: str, sid: str, config: api_pb2.PodSandboxConfig, opts: CreateOpts
) -> Any:
    """``c.runtime.create`` for a container (or the pause container) of pod ``sid``; in a pod
    with its own user namespace, the root filesystem is handed over id-mapped, through a view
    that is detached again once the shim has mounted it."""
    if not pod_userns(config):
        return await c.runtime.create(task_id, opts)
    work = str(c.sandbox_state(sid) / f"idmap-{secrets.token_hex(6)}")
    rootfs = [
        Mount(type=m.type, source=m.source, target=getattr(m, "target", ""), options=tuple(m.options))
        for m in opts.rootfs
    ]
    uids, gids = copts.userns_mappings(config.linux.security_context.namespace_options.userns_options)
    mapped = await asyncio.to_thread(
        usernslib.map_rootfs, rootfs, work, pinned_userns(c, sid), uids[0]["hostID"], gids[0]["hostID"]
    )
    try:
        return await c.runtime.create(task_id, dataclasses.replace(opts, rootfs=mapped))
    finally:
        await asyncio.shield(asyncio.to_thread(usernslib.unmap_rootfs, work))


def _metadata_any(meta: SandboxMetadata) -> typeurl.Any:
    return typeurl.Any("github.com/containerd/cri/pkg/store/sandbox/Metadata", meta.to_json())
