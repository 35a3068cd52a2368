"""CRI spec options: what a PodSandboxConfig / ContainerConfig adds to arun's default spec.

Each function edits a spec dict (``arun.oci.spec.Spec``) in place, in the order the
sandbox and container code apply them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arun.api.cri.runtime.v1 import api_pb2
from arun.errdefs import InvalidArgumentError, NotFoundError, UnimplementedError
from arun.oci.spec import Spec

# containerd's values.
DEFAULT_SANDBOX_CPU_SHARES = 2
DEFAULT_SANDBOX_OOM_ADJ = -998
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
DEV_SHM = "/dev/shm"
ETC_HOSTNAME = "/etc/hostname"
ETC_HOSTS = "/etc/hosts"
RESOLV_CONF = "/etc/resolv.conf"
HOSTNAME_ENV = "HOSTNAME"


# --- small edits --------------------------------------------------------------------------------


def without_run_mount(s: Spec) -> None:
    s["mounts"] = [m for m in s.get("mounts", []) if os.path.normpath(m["destination"]) != "/run"]


def without_default_security_settings(s: Spec) -> None:
    """No apparmor, seccomp or rlimits from the defaults (CRI decides them)."""
    s["process"].pop("apparmorProfile", None)
    s["linux"].pop("seccomp", None)
    s["process"].pop("rlimits", None)


def with_sysctls(sysctls: Mapping[str, str]) -> Any:
    def opt(s: Spec) -> None:
        if sysctls:
            s["linux"].setdefault("sysctl", {}).update(sysctls)

    return opt


def with_supplemental_groups(s: Spec, groups: Iterable[int]) -> None:
    user = s["process"]["user"]
    merged = list(user.get("additionalGids") or [])
    for g in groups:
        if g not in merged:
            merged.append(int(g))
    if merged:
        user["additionalGids"] = merged


def with_oom_score_adj(s: Spec, adj: int, restrict: bool) -> None:
    """Set the process's OOM score adjustment; with ``restrict`` never below the daemon's own.

    A daemon without CAP_SYS_RESOURCE cannot lower a score (runc would fail to start the
    container), so it always clamps, as ``restrict_oom_score_adj`` would.
    """
    if restrict or not can_lower_oom_score():
        adj = max(adj, current_oom_score_adj())
    s["process"]["oomScoreAdj"] = adj


def can_lower_oom_score() -> bool:
    """Whether this process holds CAP_SYS_RESOURCE (needed to lower oom_score_adj)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 24 & 1)  # CAP_SYS_RESOURCE = 24
    except (OSError, ValueError):
        pass
    return True


def current_oom_score_adj() -> int:
    try:
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def with_cgroup_parent(s: Spec, parent: str, id: str, systemd: bool = False) -> None:
    if not parent:
        return
    if systemd:
        slice_ = os.path.basename(parent)
        s["linux"]["cgroupsPath"] = f"{slice_}:cri-containerd:{id}"
    else:
        s["linux"]["cgroupsPath"] = os.path.join(parent, id)


def with_namespace_path(s: Spec, ns_type: str, path: str) -> None:
    nss = [n for n in s["linux"]["namespaces"] if n["type"] != ns_type]
    nss.append({"type": ns_type, "path": path} if path else {"type": ns_type})
    s["linux"]["namespaces"] = nss


def without_namespace(s: Spec, ns_type: str) -> None:
    s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"] if n["type"] != ns_type]


def passthrough_annotations(annotations: Mapping[str, str], patterns: Sequence[str]) -> dict[str, str]:
    """The annotations whose keys match one of ``patterns`` (``*`` suffix: a prefix)."""
    out = {}
    for k, v in annotations.items():
        for p in patterns:
            if p == k or (p.endswith("*") and k.startswith(p[:-1])):
                out[k] = v
                break
    return out


# --- capabilities and privileges ----------------------------------------------------------------


def _caps(s: Spec) -> dict[str, list[str]]:
    caps: dict[str, list[str]] = s["process"].setdefault("capabilities", {})
    for k in ("bounding", "effective", "permitted"):
        caps.setdefault(k, [])
    return caps


def set_capabilities(s: Spec, caps: Iterable[str]) -> None:
    c = list(caps)
    s["process"]["capabilities"] = {"bounding": list(c), "effective": list(c), "permitted": list(c)}


def add_capabilities(s: Spec, caps: Iterable[str]) -> None:
    cs = _caps(s)
    for c in caps:
        for k in ("bounding", "effective", "permitted"):
            if c not in cs[k]:
                cs[k].append(c)


def drop_capabilities(s: Spec, caps: Iterable[str]) -> None:
    cs = s["process"].setdefault("capabilities", {})
    gone = set(caps)
    for k in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        if k in cs:
            cs[k] = [c for c in cs[k] if c not in gone]


def with_capabilities(s: Spec, sc: api_pb2.LinuxContainerSecurityContext, all_caps: Sequence[str]) -> None:
    if not sc.HasField("capabilities"):
        return
    c = sc.capabilities
    adds = [x.upper() for x in c.add_capabilities]
    drops = [x.upper() for x in c.drop_capabilities]
    if "ALL" in adds:
        set_capabilities(s, all_caps)
    if "ALL" in drops:
        set_capabilities(s, [])
    add_capabilities(s, [_capname(x) for x in adds if x != "ALL"])
    drop_capabilities(s, [_capname(x) for x in drops if x != "ALL"])


def _capname(name: str) -> str:
    return name if name.startswith("CAP_") else "CAP_" + name


def without_ambient_caps(s: Spec) -> None:
    s["process"].setdefault("capabilities", {}).pop("ambient", None)


def with_host_sys_bind(s: Spec) -> None:
    """/sys as a read-only recursive bind of the host's instead of a sysfs mount: a process in a
    user namespace may mount sysfs only for a network namespace its user namespace owns, which
    the host's is not (a pod with its own user namespace on the host network)."""
    s["mounts"] = [m for m in s.get("mounts", []) if os.path.normpath(m["destination"]) != "/sys"]
    s["mounts"].append(
        {
            "destination": "/sys",
            "type": "bind",
            "source": "/sys",
            "options": ["rbind", "rro", "nosuid", "nodev", "noexec"],
        }
    )


def with_privileged(s: Spec, all_caps: Sequence[str]) -> None:
    set_capabilities(s, all_caps)
    s["linux"]["maskedPaths"] = []
    s["linux"]["readonlyPaths"] = []
    for m in s.get("mounts", []):
        if m["destination"] in ("/sys", "/sys/fs/cgroup"):
            m["options"] = [o for o in m.get("options", []) if o != "ro"] + (
                [] if "rw" in m.get("options", []) else ["rw"]
            )
    s["process"].pop("apparmorProfile", None)
    s["process"].pop("selinuxLabel", None)
    s["linux"].pop("seccomp", None)


def with_all_devices_allowed(s: Spec) -> None:
    s["linux"].setdefault("resources", {})["devices"] = [{"allow": True, "access": "rwm"}]


_SKIP_DEV_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def _device(path: str, container_path: str = "") -> dict[str, Any] | None:
    st = os.stat(path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        return None
    return {
        "path": container_path or path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every device node under ``root`` (a privileged container sees the host's)."""
    out: list[dict[str, Any]] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return out
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                if e.name not in _SKIP_DEV_DIRS:
                    out.extend(host_devices(e.path))
                continue
            if e.name == "console" or e.is_symlink():
                continue
            dev = _device(e.path)
        except OSError:
            continue
        if dev is not None:
            out.append(dev)
    return out


def with_host_devices(s: Spec) -> None:
    existing = {d["path"] for d in s["linux"].get("devices", [])}
    devs = [d for d in host_devices() if d["path"] not in existing]
    s["linux"]["devices"] = s["linux"].get("devices", []) + devs


def with_devices(s: Spec, devices: Iterable[api_pb2.Device]) -> None:
    """CRI devices: the node (or every node under a directory) plus a cgroup allow rule."""
    for d in devices:
        host = os.path.realpath(d.host_path)
        if not os.path.exists(host):
            raise NotFoundError(f"device {d.host_path!r} not found")
        perms = d.permissions or "rwm"
        if os.path.isdir(host):
            found = []
            for dev in host_devices(host):
                rel = os.path.relpath(dev["path"], host)
                dev["path"] = os.path.join(d.container_path, rel) if d.container_path else dev["path"]
                found.append(dev)
        else:
            one = _device(host, d.container_path)
            if one is None:
                raise InvalidArgumentError(f"{d.host_path!r} is not a device node")
            found = [one]
        for dev in found:
            s["linux"].setdefault("devices", []).append(dev)
            s["linux"].setdefault("resources", {}).setdefault("devices", []).append(
                {
                    "allow": True,
                    "type": dev["type"],
                    "major": dev["major"],
                    "minor": dev["minor"],
                    "access": perms,
                }
            )


# --- mounts -------------------------------------------------------------------------------------


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, optional fields) of every mount of this process, in mountinfo order."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split(" - ", 1)[0].split()
            if len(parts) < 6:
                continue
            mountpoint = parts[4].encode().decode("unicode_escape")
            optional = " ".join(parts[6:])
            out.append((mountpoint, optional))
    return out


def _mount_of(path: str) -> tuple[str, str]:
    """The mount holding ``path`` (the longest mount point that is a prefix of it)."""
    best = ("/", "")
    best_len = -1
    for mp, optional in _mountinfo():
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= best_len:
            best, best_len = (mp, optional), len(mp)
    return best


def _ensure_shared(path: str, allow_slave: bool) -> None:
    mp, optional = _mount_of(path)
    tags = optional.split()
    if any(t.startswith("shared:") for t in tags):
        return
    if allow_slave and any(t.startswith("master:") for t in tags):
        return
    kind = "shared or slave" if allow_slave else "shared"
    raise InvalidArgumentError(f"path {path!r} is mounted on {mp!r} but it is not a {kind} mount")


def _mount_depth(path: str) -> int:
    return len([p for p in os.path.normpath(path).split("/") if p])


def with_cri_mounts(
    s: Spec,
    mounts: Sequence[api_pb2.Mount],
    extra: Sequence[api_pb2.Mount],
    *,
    rro_supported: bool,
    cgroup_writable: bool = False,
) -> list[api_pb2.Mount]:
    """Bind mounts for the container's CRI mounts plus the pod's files (``extra``: /etc/hosts …).

    Host paths that do not exist are created as directories (as containerd does); symlinks are
    resolved. Returns the CRI mounts as the container status reports them.
    """
    all_mounts = list(mounts)
    crit = {os.path.normpath(m.container_path) for m in mounts}
    for e in extra:
        if os.path.normpath(e.container_path) not in crit:
            all_mounts.append(e)
    all_mounts.sort(key=lambda m: _mount_depth(m.container_path))

    cgroup_opts = ["nosuid", "noexec", "nodev", "relatime", "rw" if cgroup_writable else "ro"]
    s["mounts"].append(
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": cgroup_opts}
    )

    targets = {os.path.normpath(m.container_path) for m in all_mounts}
    kept = []
    for m in s["mounts"]:
        dst = os.path.normpath(m["destination"])
        if dst in targets:
            continue
        if "/dev" in targets and dst.startswith("/dev/"):
            continue
        kept.append(m)
    s["mounts"] = kept

    for m in all_mounts:
        src = m.host_path
        if not src:
            raise InvalidArgumentError(f"mount at {m.container_path!r} has no host path")
        if not os.path.isabs(m.container_path):
            raise InvalidArgumentError(f"mount container path {m.container_path!r} must be absolute")
        if not os.path.lexists(src):
            try:
                os.makedirs(src, 0o755, exist_ok=True)
            except OSError as e:
                raise InvalidArgumentError(f"failed to mkdir host path {src!r}: {e.strerror}") from e
        try:
            src = str(Path(src).resolve(strict=True))
        except (OSError, RuntimeError) as e:
            raise InvalidArgumentError(f"failed to resolve symlink {m.host_path!r}: {e}") from e
        options = ["rbind"]
        prop = m.propagation
        if prop == api_pb2.PROPAGATION_PRIVATE:
            options.append("rprivate")
        elif prop == api_pb2.PROPAGATION_BIDIRECTIONAL:
            _ensure_shared(src, allow_slave=False)
            options.append("rshared")
            s["linux"]["rootfsPropagation"] = "rshared"
        elif prop == api_pb2.PROPAGATION_HOST_TO_CONTAINER:
            _ensure_shared(src, allow_slave=True)
            options.append("rslave")
            if s["linux"].get("rootfsPropagation") not in ("rshared", "rslave"):
                s["linux"]["rootfsPropagation"] = "rslave"
        else:
            options.append("rprivate")
        if m.readonly:
            if m.recursive_read_only:
                if not rro_supported:
                    raise InvalidArgumentError(
                        "runtime handler does not support recursive read-only mounts "
                        f"(hostPath={m.host_path!r})"
                    )
                if prop != api_pb2.PROPAGATION_PRIVATE:
                    raise InvalidArgumentError(
                        "recursive read-only mount needs private propagation, got "
                        f"{api_pb2.MountPropagation.Name(prop)!r} (hostPath={m.host_path!r})"
                    )
                options.append("rro")
            else:
                options.append("ro")
        else:
            if m.recursive_read_only:
                raise InvalidArgumentError(
                    f"recursive read-only mount conflicts with RW mount (hostPath={m.host_path!r})"
                )
            options.append("rw")
        entry: dict[str, Any] = {
            "destination": m.container_path,
            "type": "bind",
            "source": src,
            "options": options,
        }
        if m.uidMappings:
            entry["uidMappings"] = [
                {"containerID": x.container_id, "hostID": x.host_id, "size": x.length} for x in m.uidMappings
            ]
        if m.gidMappings:
            entry["gidMappings"] = [
                {"containerID": x.container_id, "hostID": x.host_id, "size": x.length} for x in m.gidMappings
            ]
        s["mounts"].append(entry)
    return list(mounts)


# --- resources ----------------------------------------------------------------------------------


def swap_controller_available() -> bool:
    return os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes") or (
        os.path.exists("/sys/fs/cgroup/cgroup.controllers") and _v2_has_swap()
    )


def _v2_has_swap() -> bool:
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            return "memory" in f.read().split()
    except OSError:
        return False


def with_resources(s: Spec, r: api_pb2.LinuxContainerResources | None) -> None:
    if r is None:
        return
    res = s["linux"].setdefault("resources", {})
    cpu = res.setdefault("cpu", {})
    mem = res.setdefault("memory", {})
    if r.cpu_period:
        cpu["period"] = r.cpu_period
    if r.cpu_quota:
        cpu["quota"] = r.cpu_quota
    if r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    swap_ok = swap_controller_available()
    if r.memory_limit_in_bytes:
        mem["limit"] = r.memory_limit_in_bytes
        if not r.memory_swap_limit_in_bytes and swap_ok:
            mem["swap"] = r.memory_limit_in_bytes
    if r.memory_swap_limit_in_bytes and swap_ok:
        mem["swap"] = r.memory_swap_limit_in_bytes
    if r.unified:
        res.setdefault("unified", {}).update(r.unified)
    if not cpu:
        res.pop("cpu")
    if not mem:
        res.pop("memory")


def resources_to_oci(r: api_pb2.LinuxContainerResources) -> dict[str, Any]:
    """The OCI ``LinuxResources`` for an update (UpdateContainerResources)."""
    spec: Spec = {"linux": {"resources": {}}}
    with_resources(spec, r)
    out: dict[str, Any] = spec["linux"]["resources"]
    return out


# --- user namespaces -------------------------------------------------------------------------------


def userns_mappings(opts: api_pb2.UserNamespace) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """The uid/gid maps of a pod user namespace (exactly one each, mapping container id 0)."""
    if opts.mode == api_pb2.NODE:
        if opts.uids or opts.gids:
            raise InvalidArgumentError("user namespace mode NODE must not have mappings")
        return [], []
    if opts.mode != api_pb2.POD:
        raise UnimplementedError(
            f"unsupported user namespace mode: {api_pb2.NamespaceMode.Name(opts.mode)!r}"
        )
    maps = []
    for kind, ms in (("uid", opts.uids), ("gid", opts.gids)):
        if len(ms) != 1:
            raise InvalidArgumentError(
                f"user namespace: exactly one {kind} mapping is supported, got {len(ms)}"
            )
        m = ms[0]
        if m.container_id != 0:
            raise InvalidArgumentError(f"user namespace: container {kind} 0 must be mapped")
        if m.length == 0:
            raise InvalidArgumentError(f"user namespace: {kind} mapping length must not be 0")
        maps.append([{"containerID": m.container_id, "hostID": m.host_id, "size": m.length}])
    return maps[0], maps[1]
