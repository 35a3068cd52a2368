from __future__ import annotations

from pathlib import Path

import pytest

from arun.errdefs import InvalidArgumentError, NotFoundError
from arun.oci import spec as oci


def test_default_spec_matches_containerd_defaults() -> None:
    s = oci.default_spec("default", "c1")
    assert s["root"] == {"path": "rootfs"}
    assert s["linux"]["cgroupsPath"] == "/default/c1"
    assert [n["type"] for n in s["linux"]["namespaces"]] == ["pid", "ipc", "uts", "mount", "network"]
    assert [m["destination"] for m in s["mounts"]] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/run",
    ]
    assert "CAP_SYS_ADMIN" not in s["process"]["capabilities"]["bounding"]
    assert s["process"]["noNewPrivileges"] is True


def test_image_config_and_env_merge() -> None:
    image = {
        "config": {
            "Env": ["PATH=/bin", "A=1"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo hi"],
            "WorkingDir": "/w",
        }
    }
    s = oci.build("ns", "c", oci.with_image_config(image), oci.with_env(["A=2", "B=3"]))
    assert s["process"]["args"] == ["/bin/sh", "-c", "echo hi"]
    assert s["process"]["cwd"] == "/w"
    assert s["process"]["env"] == ["PATH=/bin", "A=2", "B=3"]
    s = oci.build("ns", "c", oci.with_image_config(image, args=["true"]))
    assert s["process"]["args"] == ["/bin/sh", "-c", "true"]
    assert oci.merge_env(["A=1", "B=2"], ["A"]) == ["B=2"]


def test_mounts_and_namespaces() -> None:
    s = oci.build(
        "ns",
        "c",
        oci.with_mounts([{"destination": "/dev/shm/", "type": "bind", "source": "/x", "options": ["rbind"]}]),
        oci.without_mounts("/run"),
        oci.with_host_namespace("network"),
        oci.with_linux_namespace("ipc", "/proc/1/ns/ipc"),
    )
    dests = [m["destination"] for m in s["mounts"]]
    assert dests.count("/dev/shm") == 0 and "/dev/shm/" in dests and "/run" not in dests
    assert {"type": "ipc", "path": "/proc/1/ns/ipc"} in s["linux"]["namespaces"]
    assert all(n["type"] != "network" for n in s["linux"]["namespaces"])
    with pytest.raises(InvalidArgumentError):
        oci.with_host_namespace("nope")


def test_resources() -> None:
    s = oci.build(
        "n",
        "c",
        oci.with_memory_limit(1 << 20),
        oci.with_cpu_cfs(50000, 100000),
        oci.with_cpu_shares(512),
        oci.with_pids_limit(10),
    )
    r = s["linux"]["resources"]
    assert r["memory"] == {"limit": 1 << 20}
    assert r["cpu"] == {"quota": 50000, "period": 100000, "shares": 512}
    assert r["pids"] == {"limit": 10}


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n")
    (etc / "group").write_text("root:x:0:\nwww:x:33:\naudio:x:29:www,other\nvideo:x:44:www\n")
    return tmp_path


def test_resolve_user(rootfs: Path) -> None:
    assert oci.resolve_user(rootfs, "www") == (33, 33, [29, 44])
    assert oci.resolve_user(rootfs, "33") == (33, 33, [29, 44])
    assert oci.resolve_user(rootfs, "www:audio") == (33, 29, [])
    assert oci.resolve_user(rootfs, "1000") == (1000, 0, [])
    assert oci.resolve_user(rootfs, "1000:1000") == (1000, 1000, [])
    with pytest.raises(NotFoundError):
        oci.resolve_user(rootfs, "nobody")
    with pytest.raises(NotFoundError):
        oci.resolve_user(rootfs, "www:nogroup")


def test_resolve_user_does_not_follow_links_out_of_root(
    rootfs: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "passwd"
    outside.write_text("evil:x:7:7::/:/bin/sh\n")
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to(outside)
    with pytest.raises(NotFoundError):
        oci.resolve_user(rootfs, "evil")
