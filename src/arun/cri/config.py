"""The CRI plugin's configuration, in containerd's two layouts.

Version 2 configs put everything under ``[plugins."io.containerd.grpc.v1.cri"]``
(containerd 1.x): ``sandbox_image``, ``containerd`` (snapshotter, runtimes),
``cni``, ``registry``, stream server keys and the rest. Version 3 configs
(containerd 2.x) split it: ``[plugins."io.containerd.cri.v1.runtime"]``
(``containerd``, ``cni`` and the security knobs), ``[plugins."io.containerd.cri.v1.images"]``
(``snapshotter``, ``pinned_images.sandbox``, ``registry``, download limits) and the
server keys under ``io.containerd.grpc.v1.cri``. arun accepts both, in either
config version: :func:`merge_tables` folds the v3 sections and the v2 table into
one :class:`CRIConfig` (keys of the v2 table win).

The dataclass defaults are arun's defaults. They follow containerd's, except
that the default runtime handler ``runc`` runs arun's own shim
(``io.containerd.arun.v1``); a handler with ``runtime_type =
"io.containerd.runc.v2"`` runs containerd's Go shim instead.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arun.core.runtime import RUNTIME_ARUN
from arun.errdefs import InvalidArgumentError
from arun.plugin.config import decode

DEFAULT_SANDBOX_IMAGE = "registry.k8s.io/pause:3.10"
DEFAULT_RUNTIME_NAME = "runc"
DEFAULT_SNAPSHOTTER = "overlayfs"

# Values of Runtime.sandboxer (containerd 2.x): CRI's own pause-container sandboxes.
SANDBOXER_PODSANDBOX = "podsandbox"


@dataclass
class Runtime:
    """``[...containerd.runtimes.<handler>]``: one runtime handler (RuntimeClass)."""

    runtime_type: str = RUNTIME_ARUN
    # A shim binary to use instead of the one named by runtime_type.
    runtime_path: str = ""
    # Annotation keys (``*`` suffix: a prefix) of the pod / container copied into the OCI spec.
    pod_annotations: list[str] = field(default_factory=list)
    container_annotations: list[str] = field(default_factory=list)
    # Shim options: for runc shims the fields of containerd.runc.v1.Options
    # (BinaryName, Root, SystemdCgroup, NoPivotRoot, NoNewKeyring, ShimCgroup, IoUid, IoGid, ...).
    options: dict[str, Any] = field(default_factory=dict)
    privileged_without_host_devices: bool = False
    privileged_without_host_devices_all_devices_allowed: bool = False
    cgroup_writable: bool = False
    # A JSON OCI spec used as the base of every container of this handler.
    base_runtime_spec: str = ""
    cni_conf_dir: str = ""
    cni_max_conf_num: int = 0
    snapshotter: str = ""
    sandboxer: str = SANDBOXER_PODSANDBOX
    io_type: str = ""
    # containerd 1.x keys, accepted and ignored.
    runtime_engine: str = ""
    runtime_root: str = ""
    sandbox_mode: str = ""


def _default_runtimes() -> dict[str, Runtime]:
    return {DEFAULT_RUNTIME_NAME: Runtime()}


@dataclass
class ContainerdSection:
    """``[...cri.containerd]``."""

    snapshotter: str = DEFAULT_SNAPSHOTTER
    default_runtime_name: str = DEFAULT_RUNTIME_NAME
    runtimes: dict[str, Runtime] = field(default_factory=_default_runtimes)
    disable_snapshot_annotations: bool = True
    discard_unpacked_layers: bool = False
    ignore_blockio_not_enabled_errors: bool = False
    ignore_rdt_not_enabled_errors: bool = False
    # containerd 1.x keys, accepted; default_runtime/untrusted_workload_runtime are long deprecated.
    no_pivot: bool = False
    default_runtime: dict[str, Any] = field(default_factory=dict)
    untrusted_workload_runtime: dict[str, Any] = field(default_factory=dict)


@dataclass
class CniSection:
    """``[...cri.cni]``."""

    # Empty: arun's default search path (/opt/cni/bin, then /usr/lib/cni, where Debian puts them).
    bin_dir: str = ""
    bin_dirs: list[str] = field(default_factory=list)
    conf_dir: str = "/etc/cni/net.d"
    max_conf_num: int = 1
    setup_serially: bool = False
    conf_template: str = ""
    ip_pref: str = ""
    use_internal_loopback: bool = False


@dataclass
class Mirror:
    endpoint: list[str] = field(default_factory=list)


@dataclass
class AuthConfig:
    username: str = ""
    password: str = ""
    auth: str = ""
    identitytoken: str = ""


@dataclass
class TLSConfig:
    insecure_skip_verify: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


@dataclass
class RegistryConfig:
    auth: AuthConfig | None = None
    tls: TLSConfig | None = None


@dataclass
class RegistrySection:
    """``[...cri.registry]``: ``config_path`` (a hosts.toml directory), or the legacy mirrors."""

    config_path: str = ""
    mirrors: dict[str, Mirror] = field(default_factory=dict)
    configs: dict[str, RegistryConfig] = field(default_factory=dict)
    auths: dict[str, AuthConfig] = field(default_factory=dict)
    headers: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ImageDecryption:
    key_model: str = "node"


@dataclass
class X509KeyPair:
    tls_cert_file: str = ""
    tls_key_file: str = ""


@dataclass
class ImagePlatform:
    platform: str = ""
    snapshotter: str = ""


@dataclass
class CRIConfig:
    """The whole CRI configuration in the version 2 layout (``io.containerd.grpc.v1.cri``)."""

    sandbox_image: str = DEFAULT_SANDBOX_IMAGE
    containerd: ContainerdSection = field(default_factory=ContainerdSection)
    cni: CniSection = field(default_factory=CniSection)
    registry: RegistrySection = field(default_factory=RegistrySection)
    image_decryption: ImageDecryption = field(default_factory=ImageDecryption)
    # Streaming server.
    disable_tcp_service: bool = True
    stream_server_address: str = "127.0.0.1"
    stream_server_port: str = "0"
    stream_idle_timeout: str = "4h0m0s"
    enable_tls_streaming: bool = False
    x509_key_pair_streaming: X509KeyPair = field(default_factory=X509KeyPair)
    # Images.
    max_concurrent_downloads: int = 3
    concurrent_layer_fetch_buffer: int = 0
    image_pull_progress_timeout: str = "5m0s"
    image_pull_with_sync_fs: bool = False
    use_local_image_pull: bool = False
    stats_collect_period: int = 10
    runtime_platforms: dict[str, ImagePlatform] = field(default_factory=dict)
    # Containers.
    enable_selinux: bool = False
    selinux_category_range: int = 1024
    max_container_log_line_size: int = 16 * 1024
    disable_cgroup: bool = False
    disable_apparmor: bool = False
    # Clamp a requested oom_score_adj to the daemon's own (for hosts where lowering it fails).
    restrict_oom_score_adj: bool = False
    disable_proc_mount: bool = False
    unset_seccomp_profile: str = ""
    tolerate_missing_hugetlb_controller: bool = True
    disable_hugetlb_controller: bool = True
    device_ownership_from_security_context: bool = False
    ignore_image_defined_volumes: bool = False
    netns_mounts_under_state_dir: bool = False
    enable_unprivileged_ports: bool = True
    enable_unprivileged_icmp: bool = True
    enable_cdi: bool = False
    cdi_spec_dirs: list[str] = field(default_factory=list)
    drain_exec_sync_io_timeout: str = "0s"
    ignore_deprecation_warnings: list[str] = field(default_factory=list)
    stats_retention_period: str = ""
    enable_criu: bool = False
    enable_experimental_restore_via_create: bool = False
    systemd_cgroup: bool = False
    # tls for the CRI gRPC endpoint (unused: arun serves CRI on its unix socket only).
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def runtime(self, handler: str) -> Runtime:
        """The runtime of a RuntimeClass handler ("" = the default handler)."""
        name = handler or self.containerd.default_runtime_name
        rt = self.containerd.runtimes.get(name)
        if rt is None:
            raise InvalidArgumentError(f"no runtime for {handler or name!r} is configured")
        return rt

    def validate(self) -> None:
        if self.containerd.default_runtime_name not in self.containerd.runtimes:
            raise InvalidArgumentError(
                f"no corresponding runtime configured in `containerd.runtimes` for "
                f"`containerd` `default_runtime_name = {self.containerd.default_runtime_name!r}`"
            )
        if self.max_concurrent_downloads < 0:
            raise InvalidArgumentError("max_concurrent_downloads must not be negative")
        if self.cni.ip_pref not in ("", "ipv4", "ipv6", "cni"):
            raise InvalidArgumentError(f"invalid ip_pref {self.cni.ip_pref!r}")
        for name, rt in self.containerd.runtimes.items():
            if not rt.runtime_type and not rt.runtime_path:
                raise InvalidArgumentError(f"runtime {name!r} has no runtime_type")
            if rt.sandboxer not in ("", SANDBOXER_PODSANDBOX, "shim"):
                raise InvalidArgumentError(f"runtime {name!r}: unknown sandboxer {rt.sandboxer!r}")


# --- version 3 sections ---------------------------------------------------------------------------


@dataclass
class RuntimeSection:
    """``[plugins."io.containerd.cri.v1.runtime"]`` (config version 3)."""

    containerd: ContainerdSection = field(default_factory=ContainerdSection)
    cni: CniSection = field(default_factory=CniSection)
    enable_selinux: bool = False
    selinux_category_range: int = 1024
    max_container_log_line_size: int = 16 * 1024
    disable_apparmor: bool = False
    restrict_oom_score_adj: bool = False
    disable_proc_mount: bool = False
    unset_seccomp_profile: str = ""
    tolerate_missing_hugetlb_controller: bool = True
    disable_hugetlb_controller: bool = True
    device_ownership_from_security_context: bool = False
    ignore_image_defined_volumes: bool = False
    netns_mounts_under_state_dir: bool = False
    enable_unprivileged_ports: bool = True
    enable_unprivileged_icmp: bool = True
    enable_cdi: bool = False
    cdi_spec_dirs: list[str] = field(default_factory=list)
    drain_exec_sync_io_timeout: str = "0s"
    ignore_deprecation_warnings: list[str] = field(default_factory=list)
    stats_collect_period: str = ""
    stats_retention_period: str = ""
    enable_criu: bool = False
    enable_experimental_restore_via_create: bool = False


@dataclass
class ImagesSection:
    """``[plugins."io.containerd.cri.v1.images"]`` (config version 3)."""

    snapshotter: str = DEFAULT_SNAPSHOTTER
    disable_snapshot_annotations: bool = True
    discard_unpacked_layers: bool = False
    pinned_images: dict[str, str] = field(default_factory=lambda: {"sandbox": DEFAULT_SANDBOX_IMAGE})
    runtime_platforms: dict[str, ImagePlatform] = field(default_factory=dict)
    registry: RegistrySection = field(default_factory=RegistrySection)
    image_decryption: ImageDecryption = field(default_factory=ImageDecryption)
    max_concurrent_downloads: int = 3
    concurrent_layer_fetch_buffer: int = 0
    image_pull_progress_timeout: str = "5m0s"
    image_pull_with_sync_fs: bool = False
    stats_collect_period: int = 10
    use_local_image_pull: bool = False


# Keys of the images section that live under ``containerd`` in the v2 layout.
_IMAGES_TO_CONTAINERD = ("snapshotter", "disable_snapshot_annotations", "discard_unpacked_layers")
# Keys of the v3 runtime section whose v2 meaning differs (a Go duration string in v3).
_RUNTIME_SKIP = ("stats_collect_period",)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict) and k != "options":
            _deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def merge_tables(
    grpc_table: Mapping[str, Any],
    runtime_table: Mapping[str, Any] | None = None,
    images_table: Mapping[str, Any] | None = None,
    *,
    where: str = "<config>",
    version: int = 2,
) -> CRIConfig:
    """One CRIConfig from the raw TOML tables of the three sections.

    The v3 sections are mapped into the v2 layout. Which layout wins where both set a
    key follows the config's version: in a version 2 config the v2 table
    (``io.containerd.grpc.v1.cri``) is merged over the v3 sections, in a version 3
    config the other way round. A runtime handler table replaces the default handler
    of the same name as a whole, as containerd's TOML decoding does.
    """
    merged: dict[str, Any] = {}
    if version < 3:
        merged = _merge_v3(merged, runtime_table, images_table)
        merged = _deep_merge(merged, grpc_table)
    else:
        merged = _deep_merge(merged, grpc_table)
        merged = _merge_v3(merged, runtime_table, images_table)
    return _finish(merged, where)


def _merge_v3(
    merged: dict[str, Any], runtime_table: Mapping[str, Any] | None, images_table: Mapping[str, Any] | None
) -> dict[str, Any]:
    if runtime_table:
        merged = _deep_merge(merged, {k: v for k, v in runtime_table.items() if k not in _RUNTIME_SKIP})
    if images_table:
        images = dict(images_table)
        pinned = images.pop("pinned_images", None) or {}
        if "sandbox" in pinned:
            merged["sandbox_image"] = pinned["sandbox"]
        containerd = {k: images.pop(k) for k in _IMAGES_TO_CONTAINERD if k in images}
        if containerd:
            merged = _deep_merge(merged, {"containerd": containerd})
        merged = _deep_merge(merged, images)
    return merged


def _finish(merged: dict[str, Any], where: str) -> CRIConfig:
    cfg = decode(CRIConfig, merged, where=where)
    # The default handler table is kept unless the config names the same handler.
    runtimes = merged.get("containerd", {}).get("runtimes")
    if runtimes is not None:
        defaults = _default_runtimes()
        for name, rt in defaults.items():
            cfg.containerd.runtimes.setdefault(name, rt)
    cfg.validate()
    return cfg
