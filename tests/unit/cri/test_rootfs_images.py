from __future__ import annotations

import os
from pathlib import Path

import pytest

from arun.api.cri.runtime.v1 import api_pb2
from arun.core.content import Descriptor
from arun.core.mount import Mount
from arun.cri import rootfs, util
from arun.cri.config import Runtime
from arun.cri.images.store import CRIImage, ImageDetails, references_for
from arun.reference import parse_docker_ref


def _layer(root: Path, files: dict[str, str]) -> str:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(data)
    return str(root)


async def test_read_files_from_layers(tmp_path: Path) -> None:
    lower = _layer(tmp_path / "l1", {"etc/passwd": "old\n", "etc/group": "g\n"})
    upper = _layer(tmp_path / "up", {"etc/passwd": "new\n"})
    ov = Mount(
        type="overlay", source="overlay", options=(f"lowerdir={lower}", f"upperdir={upper}", "workdir=/w")
    )
    got = await rootfs.read_files([ov], "etc/passwd", "etc/group", "etc/shadow")
    assert got == {"etc/passwd": b"new\n", "etc/group": b"g\n", "etc/shadow": None}
    bind = Mount(type="bind", source=lower, options=("rbind", "ro"))
    assert (await rootfs.read_files([bind], "etc/passwd"))["etc/passwd"] == b"old\n"


@pytest.mark.root
async def test_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    lower = _layer(tmp_path / "l1", {"etc/passwd": "old\n", "etc/group": "g\n"})
    upper = tmp_path / "up"
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc" / "passwd", 0o600 | 0o020000, 0)  # a whiteout: char device 0/0
    ov = Mount(type="overlay", source="overlay", options=(f"lowerdir={lower}", f"upperdir={upper}"))
    got = await rootfs.read_files([ov], "etc/passwd", "etc/group")
    assert got == {"etc/passwd": None, "etc/group": b"g\n"}
    os.setxattr(upper / "etc", "trusted.overlay.opaque", b"y")
    assert (await rootfs.read_files([ov], "etc/group"))["etc/group"] is None


def test_repo_tags_and_digests() -> None:
    tagged = parse_docker_ref("busybox:1.36")
    names = references_for(tagged, "sha256:" + "a" * 64, "sha256:" + "c" * 64)
    assert names == [
        "sha256:" + "c" * 64,
        "docker.io/library/busybox:1.36",
        "docker.io/library/busybox@sha256:" + "a" * 64,
    ]
    by_digest = parse_docker_ref("quay.io/x/y@sha256:" + "b" * 64)
    assert references_for(by_digest, "sha256:" + "b" * 64, "sha256:" + "c" * 64) == [
        "sha256:" + "c" * 64,
        "quay.io/x/y@sha256:" + "b" * 64,
    ]
    d = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "a" * 64, 10)
    details = ImageDetails("sha256:" + "c" * 64, d, d, d, {"config": {"User": "33:33"}}, (), "", 100)
    img = CRIImage(details, [*names, "registry.k8s.io/busybox:1.36"])
    proto = img.to_proto()
    assert list(proto.repo_tags) == ["docker.io/library/busybox:1.36", "registry.k8s.io/busybox:1.36"]
    assert list(proto.repo_digests) == ["docker.io/library/busybox@sha256:" + "a" * 64]
    assert proto.uid.value == 33 and proto.size == 100 and proto.spec.image == proto.id
    details = ImageDetails("sha256:" + "c" * 64, d, d, d, {"config": {"User": "www-data"}}, (), "", 1)
    p2 = CRIImage(details, []).to_proto()
    assert p2.username == "www-data" and not p2.HasField("uid")


def test_util() -> None:
    md = api_pb2.PodSandboxMetadata(name="p", namespace="ns", uid="u", attempt=3)
    assert util.sandbox_name(md) == "p_ns_u_3"
    assert util.container_name(api_pb2.ContainerMetadata(name="c", attempt=1), md) == "c_p_ns_u_1"
    assert (
        util.parse_signal("SIGTERM") == 15 and util.parse_signal("kill") == 9 and util.parse_signal("") == 0
    )
    assert util.parse_signal("10") == 10 and util.signal_name(15) == "SIGTERM"
    assert len(util.new_id()) == 64
    opts = util.runtime_options(
        Runtime(options={"BinaryName": "crun", "SystemdCgroup": True, "root": "/r", "TypeUrl": "ignored"})
    )
    assert opts is not None and opts.type_url == "containerd.runc.v1.Options"
    from arun.api.containerd.types.runc.options import oci_pb2

    decoded = oci_pb2.Options.FromString(opts.value)
    assert (decoded.binary_name, decoded.systemd_cgroup, decoded.root) == ("crun", True, "/r")
    assert util.runtime_options(Runtime()) is None
