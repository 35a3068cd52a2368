"""Seccomp for CRI containers: which profile applies, and arun's RuntimeDefault profile.

Profile selection (containerd's ``sputil``):

* a ``SecurityProfile`` (``seccomp`` field) wins over the deprecated ``seccomp_profile_path``;
* ``RuntimeDefault`` → :func:`default_profile`; ``Unconfined`` → none;
  ``Localhost`` → the JSON file named by ``localhost_ref`` (an absolute path);
* the legacy path strings are ``runtime/default``, ``docker/default``, ``unconfined``
  and ``localhost/<absolute path>``; an empty one means the daemon's
  ``unset_seccomp_profile`` (none by default);
* privileged containers get no filter at all.

arun's RuntimeDefault profile allows every system call except those that reach
outside the container's namespaces (kernel modules, keyrings, clocks, mounts,
namespaces, raw I/O, accounting, reboot …) unless the container holds the
capability that guards them — the same intent as containerd's and Docker's
default profile, written as a deny list so that new system calls keep working.
Denied calls fail with EPERM.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable
from typing import Any

from arun.api.cri.runtime.v1 import api_pb2
from arun.errdefs import InvalidArgumentError, NotFoundError

PROFILE_RUNTIME_DEFAULT = "runtime/default"
PROFILE_DOCKER_DEFAULT = "docker/default"
PROFILE_UNCONFINED = "unconfined"
PROFILE_LOCALHOST_PREFIX = "localhost/"

EPERM = 1

_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
}

# System calls denied unless the container has one of the listed capabilities; an empty tuple
# means always denied (nothing in a container needs them, and they are not namespaced).
_GUARDED: dict[str, tuple[str, ...]] = {
    # Kernel modules.
    "init_module": ("CAP_SYS_MODULE",),
    "finit_module": ("CAP_SYS_MODULE",),
    "delete_module": ("CAP_SYS_MODULE",),
    "create_module": (),
    "get_kernel_syms": (),
    "query_module": (),
    # Kernel keyrings are not namespaced.
    "add_key": (),
    "keyctl": (),
    "request_key": (),
    # Loading another kernel, rebooting.
    "kexec_load": (),
    "kexec_file_load": (),
    "reboot": ("CAP_SYS_BOOT",),
    # Clocks are global.
    "clock_settime": ("CAP_SYS_TIME",),
    "clock_settime64": ("CAP_SYS_TIME",),
    "clock_adjtime": ("CAP_SYS_TIME",),
    "clock_adjtime64": ("CAP_SYS_TIME",),
    "settimeofday": ("CAP_SYS_TIME",),
    "stime": ("CAP_SYS_TIME",),
    # Mounts, namespaces, swap, quotas and other administration.
    "mount": ("CAP_SYS_ADMIN",),
    "umount": ("CAP_SYS_ADMIN",),
    "umount2": ("CAP_SYS_ADMIN",),
    "mount_setattr": ("CAP_SYS_ADMIN",),
    "move_mount": ("CAP_SYS_ADMIN",),
    "open_tree": ("CAP_SYS_ADMIN",),
    "fsopen": ("CAP_SYS_ADMIN",),
    "fsconfig": ("CAP_SYS_ADMIN",),
    "fsmount": ("CAP_SYS_ADMIN",),
    "fspick": ("CAP_SYS_ADMIN",),
    "pivot_root": ("CAP_SYS_ADMIN",),
    "unshare": ("CAP_SYS_ADMIN",),
    "setns": ("CAP_SYS_ADMIN",),
    "swapon": ("CAP_SYS_ADMIN",),
    "swapoff": ("CAP_SYS_ADMIN",),
    "quotactl": ("CAP_SYS_ADMIN",),
    "quotactl_fd": ("CAP_SYS_ADMIN",),
    "fanotify_init": ("CAP_SYS_ADMIN",),
    "lookup_dcookie": ("CAP_SYS_ADMIN",),
    "bpf": ("CAP_SYS_ADMIN", "CAP_BPF"),
    "perf_event_open": ("CAP_SYS_ADMIN", "CAP_PERFMON"),
    "syslog": ("CAP_SYS_ADMIN", "CAP_SYSLOG"),
    "acct": ("CAP_SYS_PACCT",),
    "vhangup": ("CAP_SYS_TTY_CONFIG",),
    # Raw hardware access.
    "iopl": ("CAP_SYS_RAWIO",),
    "ioperm": ("CAP_SYS_RAWIO",),
    # Other processes' memory and NUMA placement.
    "process_vm_readv": ("CAP_SYS_PTRACE",),
    "process_vm_writev": ("CAP_SYS_PTRACE",),
    "kcmp": ("CAP_SYS_PTRACE",),
    "userfaultfd": ("CAP_SYS_PTRACE",),
    "mbind": ("CAP_SYS_NICE",),
    "set_mempolicy": ("CAP_SYS_NICE",),
    "set_mempolicy_home_node": ("CAP_SYS_NICE",),
    "get_mempolicy": ("CAP_SYS_NICE",),
    "move_pages": ("CAP_SYS_NICE",),
    # File handles bypass path permission checks.
    "open_by_handle_at": ("CAP_DAC_READ_SEARCH",),
    "name_to_handle_at": ("CAP_DAC_READ_SEARCH",),
    # Obsolete interfaces.
    "nfsservctl": (),
    "uselib": (),
    "ustat": (),
    "sysfs": (),
    "_sysctl": (),
    "vm86": (),
    "vm86old": (),
}


def architectures() -> list[str]:
    return list(_ARCHES.get(platform.machine(), []))


def default_profile(capabilities: Iterable[str] = ()) -> dict[str, Any]:
    """arun's RuntimeDefault profile for a container holding ``capabilities`` (bounding set)."""
    caps = set(capabilities)
    denied = sorted(name for name, guards in _GUARDED.items() if not (caps & set(guards)))
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": [{"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}],
    }


def load_localhost(path: str) -> dict[str, Any]:
    """A localhost profile (OCI ``LinuxSeccomp`` JSON, as containerd reads it)."""
    if not os.path.isabs(path):
        raise InvalidArgumentError(f"seccomp localhost profile path {path!r} must be absolute")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise NotFoundError(f"seccomp profile {path!r} not found") from None
    except OSError as e:
        raise InvalidArgumentError(f"cannot read seccomp profile {path!r}: {e.strerror}") from e
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise InvalidArgumentError(f"seccomp profile {path!r} is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("defaultAction", ""), str):
        raise InvalidArgumentError(f"seccomp profile {path!r} is not a seccomp profile object")
    if not doc.get("defaultAction"):
        raise InvalidArgumentError(f"seccomp profile {path!r} has no defaultAction")
    syscalls = doc.get("syscalls") or []
    if not isinstance(syscalls, list) or not all(isinstance(s, dict) for s in syscalls):
        raise InvalidArgumentError(f"seccomp profile {path!r}: syscalls must be a list of objects")
    return _to_oci(doc)


def _to_oci(doc: dict[str, Any]) -> dict[str, Any]:
    """Docker-style profiles (``archMap``, ``name``) to the OCI form runc reads."""
    out: dict[str, Any] = {"defaultAction": doc["defaultAction"]}
    if "defaultErrnoRet" in doc:
        out["defaultErrnoRet"] = doc["defaultErrnoRet"]
    arches = list(doc.get("architectures") or [])
    for entry in doc.get("archMap") or []:
        if isinstance(entry, dict) and entry.get("architecture"):
            arches.append(entry["architecture"])
            arches.extend(entry.get("subArchitectures") or [])
    if arches:
        out["architectures"] = arches
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if key in doc:
            out[key] = doc[key]
    syscalls = []
    for s in doc.get("syscalls") or []:
        names = list(s.get("names") or [])
        if s.get("name"):
            names.append(s["name"])
        if not names:
            raise InvalidArgumentError("seccomp profile: a syscall rule has no names")
        rule: dict[str, Any] = {"names": names, "action": s.get("action", "")}
        if not rule["action"]:
            raise InvalidArgumentError(f"seccomp profile: rule for {names} has no action")
        for key in ("errnoRet", "args"):
            if key in s:
                rule[key] = s[key]
        syscalls.append(rule)
    if syscalls:
        out["syscalls"] = syscalls
    return out


def profile_from_legacy(path: str, unset: str = "") -> api_pb2.SecurityProfile | None:
    """The deprecated ``seccomp_profile_path`` string as a SecurityProfile (None: none at all)."""
    if not path:
        path = unset
    if not path:
        return None
    if path in (PROFILE_RUNTIME_DEFAULT, PROFILE_DOCKER_DEFAULT):
        return api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.RuntimeDefault)
    if path == PROFILE_UNCONFINED:
        return api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Unconfined)
    if path.startswith(PROFILE_LOCALHOST_PREFIX):
        return api_pb2.SecurityProfile(
            profile_type=api_pb2.SecurityProfile.Localhost,
            localhost_ref=path[len(PROFILE_LOCALHOST_PREFIX) :],
        )
    raise InvalidArgumentError(f"unsupported seccomp profile {path!r}")


def resolve(
    profile: api_pb2.SecurityProfile | None,
    legacy_path: str,
    unset: str,
    privileged: bool,
    capabilities: Iterable[str],
) -> dict[str, Any] | None:
    """The OCI ``linux.seccomp`` for a container (None: unconfined)."""
    if profile is None:
        profile = profile_from_legacy(legacy_path, unset)
    if privileged or profile is None:
        return None
    kind = profile.profile_type
    if kind == api_pb2.SecurityProfile.RuntimeDefault:
        return default_profile(capabilities)
    if kind == api_pb2.SecurityProfile.Unconfined:
        return None
    if kind == api_pb2.SecurityProfile.Localhost:
        ref = profile.localhost_ref
        if ref.startswith(PROFILE_LOCALHOST_PREFIX):
            ref = ref[len(PROFILE_LOCALHOST_PREFIX) :]
        if not ref:
            raise InvalidArgumentError("seccomp profile type Localhost needs a localhost_ref")
        return load_localhost(ref)
    raise InvalidArgumentError(f"unsupported seccomp profile type {kind}")


def is_set(profile: api_pb2.SecurityProfile | None, legacy_path: str) -> bool:
    return profile is not None or bool(legacy_path)
