"""Building OCI runtime specs (config.json) as plain JSON-shaped dicts.

``default_spec()`` gives containerd's Linux defaults; a ``SpecOpt`` is a
function that edits a spec in place; ``build(ns, id, *opts)`` applies them in
order. The CRI plugin, the Python client and the CLI all build specs here.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arun.errdefs import InvalidArgumentError, NotFoundError

Spec = dict[str, Any]
SpecOpt = Callable[[Spec], None]

OCI_VERSION = "1.1.0"
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

DEFAULT_MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
)

DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

NAMESPACE_TYPES = ("pid", "ipc", "uts", "mount", "network", "user", "cgroup", "time")


_DEVPTS_OPTIONS = ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")


def _mount(dest: str, type_: str, source: str, *options: str) -> dict[str, Any]:
    return {"destination": dest, "type": type_, "source": source, "options": list(options)}


def default_mounts() -> list[dict[str, Any]]:
    return [
        _mount("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
        _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        _mount("/dev/pts", "devpts", "devpts", *_DEVPTS_OPTIONS),
        _mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
        _mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
        _mount("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
        _mount("/run", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
    ]


def default_spec(namespace: str, container_id: str) -> Spec:
    """containerd's default Linux spec for container ``container_id`` in ``namespace``."""
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "ociVersion": OCI_VERSION,
        "root": {"path": "rootfs"},
        "process": {
            "cwd": "/",
            "noNewPrivileges": True,
            "user": {"uid": 0, "gid": 0},
            "env": [DEFAULT_PATH_ENV],
            "capabilities": {"bounding": caps, "permitted": list(caps), "effective": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        },
        "mounts": default_mounts(),
        "linux": {
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
            "cgroupsPath": f"/{namespace}/{container_id}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
        },
    }


def build(namespace: str, container_id: str, *opts: SpecOpt) -> Spec:
    spec = default_spec(namespace, container_id)
    for opt in opts:
        opt(spec)
    return spec


# --- process -----------------------------------------------------------------------------------


def with_process_args(*args: str) -> SpecOpt:
    def opt(s: Spec) -> None:
        s["process"]["args"] = list(args)

    return opt


def with_process_cwd(cwd: str) -> SpecOpt:
    def opt(s: Spec) -> None:
        s["process"]["cwd"] = cwd

    return opt


def merge_env(defaults: Sequence[str], overrides: Iterable[str]) -> list[str]:
    """Overrides replace defaults with the same name; ``NAME`` alone (no '=') removes it."""
    out = list(defaults)
    for kv in overrides:
        name = kv.split("=", 1)[0]
        out = [e for e in out if e.split("=", 1)[0] != name]
        if "=" in kv:
            out.append(kv)
    return out


def with_env(env: Iterable[str]) -> SpecOpt:
    def opt(s: Spec) -> None:
        s["process"]["env"] = merge_env(s["process"].get("env", []), env)

    return opt


def with_tty(width: int = 0, height: int = 0) -> SpecOpt:
    def opt(s: Spec) -> None:
        s["process"]["terminal"] = True
        if width and height:
            s["process"]["consoleSize"] = {"width": width, "height": height}

    return opt


def with_image_config(config: Mapping[str, Any], args: Sequence[str] | None = None) -> SpecOpt:
    """Env, entrypoint/cmd and working dir from an OCI image config's ``config`` section.

    The image's ``User`` needs the root filesystem to resolve names: see
    ``resolve_user`` and ``with_user_ids``.
    """

    def opt(s: Spec) -> None:
        cfg = config.get("config") or {}
        s["process"]["env"] = merge_env(s["process"].get("env", []), cfg.get("Env") or [])
        entry = list(cfg.get("Entrypoint") or [])
        cmd = list(cfg.get("Cmd") or [])
        s["process"]["args"] = entry + (list(args) if args else cmd)
        if cfg.get("WorkingDir"):
            s["process"]["cwd"] = cfg["WorkingDir"]

    return opt


def with_user_ids(uid: int, gid: int, additional_gids: Sequence[int] = ()) -> SpecOpt:
    def opt(s: Spec) -> None:
        user = s["process"]["user"]
        user.pop("username", None)
        user["uid"] = uid
        user["gid"] = gid
        if additional_gids:
            user["additionalGids"] = sorted(set(additional_gids))

    return opt


def with_hostname(name: str) -> SpecOpt:
    def opt(s: Spec) -> None:
        s["hostname"] = name

    return opt


def with_annotations(annotations: Mapping[str, str]) -> SpecOpt:
    def opt(s: Spec) -> None:
        s.setdefault("annotations", {}).update(annotations)

    return opt


# --- mounts, namespaces, root ------------------------------------------------------------------


def with_mounts(mounts: Iterable[Mapping[str, Any]]) -> SpecOpt:
    """Add mounts; a mount at the destination of an existing one replaces it."""

    def opt(s: Spec) -> None:
        new = [dict(m) for m in mounts]
        dests = {os.path.normpath(m["destination"]) for m in new}
        kept = [m for m in s.get("mounts", []) if os.path.normpath(m["destination"]) not in dests]
        s["mounts"] = kept + new

    return opt


def without_mounts(*destinations: str) -> SpecOpt:
    gone = {os.path.normpath(d) for d in destinations}

    def opt(s: Spec) -> None:
        s["mounts"] = [m for m in s.get("mounts", []) if os.path.normpath(m["destination"]) not in gone]

    return opt


def with_host_namespace(ns_type: str) -> SpecOpt:
    if ns_type not in NAMESPACE_TYPES:
        raise InvalidArgumentError(f"unknown namespace type {ns_type!r}")

    def opt(s: Spec) -> None:
        s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"] if n["type"] != ns_type]

    return opt


def with_linux_namespace(ns_type: str, path: str = "") -> SpecOpt:
    """Use (join) namespace ``ns_type`` at ``path``, or a new one if path is empty."""
    if ns_type not in NAMESPACE_TYPES:
        raise InvalidArgumentError(f"unknown namespace type {ns_type!r}")

    def opt(s: Spec) -> None:
        entry: dict[str, str] = {"type": ns_type}
        if path:
            entry["path"] = path
        rest = [n for n in s["linux"]["namespaces"] if n["type"] != ns_type]
        s["linux"]["namespaces"] = [*rest, entry]

    return opt


def with_rootfs_path(path: str, readonly: bool = False) -> SpecOpt:
    def opt(s: Spec) -> None:
        s["root"] = {"path": path, "readonly": readonly} if readonly else {"path": path}

    return opt


def with_readonly_rootfs(s: Spec) -> None:
    s["root"]["readonly"] = True


def with_cgroups_path(path: str) -> SpecOpt:
    def opt(s: Spec) -> None:
        s["linux"]["cgroupsPath"] = path

    return opt


# --- security ----------------------------------------------------------------------------------


def with_capabilities(caps: Iterable[str]) -> SpecOpt:
    def opt(s: Spec) -> None:
        c = list(caps)
        s["process"]["capabilities"] = {"bounding": c, "permitted": list(c), "effective": list(c)}

    return opt


def with_new_privileges(s: Spec) -> None:
    s["process"]["noNewPrivileges"] = False


def with_masked_paths(paths: Iterable[str]) -> SpecOpt:
    def opt(s: Spec) -> None:
        s["linux"]["maskedPaths"] = list(paths)

    return opt


def with_readonly_paths(paths: Iterable[str]) -> SpecOpt:
    def opt(s: Spec) -> None:
        s["linux"]["readonlyPaths"] = list(paths)

    return opt


# --- resources ---------------------------------------------------------------------------------


def _resources(s: Spec) -> dict[str, Any]:
    res: dict[str, Any] = s["linux"].setdefault("resources", {})
    return res


def with_memory_limit(limit: int) -> SpecOpt:
    def opt(s: Spec) -> None:
        _resources(s).setdefault("memory", {})["limit"] = limit

    return opt


def with_cpu_shares(shares: int) -> SpecOpt:
    def opt(s: Spec) -> None:
        _resources(s).setdefault("cpu", {})["shares"] = shares

    return opt


def with_cpu_cfs(quota: int, period: int) -> SpecOpt:
    def opt(s: Spec) -> None:
        cpu = _resources(s).setdefault("cpu", {})
        cpu["quota"] = quota
        cpu["period"] = period

    return opt


def with_pids_limit(limit: int) -> SpecOpt:
    def opt(s: Spec) -> None:
        _resources(s)["pids"] = {"limit": limit}

    return opt


# --- users and groups from the image -----------------------------------------------------------


def _read_db(root: Path, name: str) -> list[list[str]]:
    """Entries of /etc/passwd or /etc/group inside ``root``, without following links out of it."""
    path = root / "etc" / name
    try:
        resolved = path.resolve()
        resolved.relative_to(root.resolve())
        text = resolved.read_text(errors="replace")
    except (OSError, ValueError):
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(root: Path, user: str) -> tuple[int, int, list[int]]:
    """(uid, gid, additional gids) for an image ``User`` string (``name``, ``uid``, ``uid:gid``…).

    Names are looked up in the rootfs's /etc/passwd and /etc/group; numeric
    ids need not exist there. A named user or group that is missing is
    NotFoundError, as in containerd.
    """
    passwd = _read_db(root, "passwd")
    groups = _read_db(root, "group")
    name, _, group = user.partition(":")
    uid: int
    gid: int | None = None
    username = ""
    if name.isdigit():
        uid = int(name)
        for e in passwd:
            if len(e) >= 4 and e[2] == name:
                username = e[0]
                gid = int(e[3]) if e[3].isdigit() else None
                break
    else:
        for e in passwd:
            if len(e) >= 4 and e[0] == name:
                uid, username = int(e[2]), name
                gid = int(e[3]) if e[3].isdigit() else None
                break
        else:
            raise NotFoundError(f"no users found for {name!r} in the image's /etc/passwd")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            for g in groups:
                if len(g) >= 3 and g[0] == group:
                    gid = int(g[2])
                    break
            else:
                raise NotFoundError(f"no groups found for {group!r} in the image's /etc/group")
    if gid is None:
        gid = 0
    additional = []
    if username and not group:
        for g in groups:
            if len(g) >= 4 and username in g[3].split(",") and g[2].isdigit():
                additional.append(int(g[2]))
    return uid, gid, sorted(set(additional) - {gid})


def deep_copy(spec: Spec) -> Spec:
    return copy.deepcopy(spec)
