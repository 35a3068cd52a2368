from __future__ import annotations

import json
from pathlib import Path

import pytest

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri import user
from arun.cri.opts import capabilities, seccomp
from arun.cri.opts import spec as copts
from arun.errdefs import InvalidArgumentError, NotFoundError, UnimplementedError
from arun.oci.spec import default_spec

PASSWD = b"root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\ntester:x:1000:1000::/h:/bin/sh\n"
GROUP = b"root:x:0:\nwww-data:x:33:\ntester:x:1000:\nstaff:x:50:tester\naudio:x:29:tester,www-data\n"
DB = user.Passwd.parse(PASSWD, GROUP)


@pytest.mark.parametrize(
    ("userstr", "want"),
    [
        ("0", (0, 0)),
        ("1000", (1000, 1000)),
        ("4242", (4242, 0)),
        ("www-data", (33, 33)),
        ("1000:50", (1000, 50)),
        ("tester:audio", (1000, 29)),
        ("4242:4343", (4242, 4343)),
    ],
)
def test_resolve_user(userstr: str, want: tuple[int, int]) -> None:
    assert user.resolve(userstr, DB) == want


def test_resolve_user_errors() -> None:
    with pytest.raises(NotFoundError):
        user.resolve("nobody-here", DB)
    with pytest.raises(NotFoundError):
        user.resolve("1000:nogroup", DB)
    with pytest.raises(InvalidArgumentError):
        user.resolve("99999999999", DB)
    with pytest.raises(InvalidArgumentError):
        user.user_string("", None, 5)
    assert user.user_string("", 5, 6) == "5:6" and user.user_string("bob", 5, None) == "bob"
    assert not user.needs_files("1:2") and user.needs_files("1") and user.needs_files("bob")


def test_image_groups() -> None:
    assert user.image_groups("1000", DB) == [29, 50]
    assert user.image_groups("tester", DB) == [29, 50]
    assert user.image_groups("www-data", DB) == [29]
    assert user.image_groups("4242", DB) == []


def test_default_seccomp_profile_depends_on_capabilities() -> None:
    plain = seccomp.default_profile(["CAP_CHOWN"])
    assert plain["defaultAction"] == "SCMP_ACT_ALLOW"
    denied = set(plain["syscalls"][0]["names"])
    assert {"mount", "unshare", "kexec_load", "add_key", "reboot", "bpf"} <= denied
    admin = set(seccomp.default_profile(["CAP_SYS_ADMIN", "CAP_SYS_BOOT"])["syscalls"][0]["names"])
    assert "mount" not in admin and "unshare" not in admin and "reboot" not in admin and "bpf" not in admin
    assert "kexec_load" in admin and "add_key" in admin


def test_seccomp_selection(tmp_path: Path) -> None:
    rd = api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.RuntimeDefault)
    unc = api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Unconfined)
    assert seccomp.resolve(rd, "", "", False, [])["defaultAction"] == "SCMP_ACT_ALLOW"  # type: ignore[index]
    assert seccomp.resolve(unc, "", "", False, []) is None
    assert seccomp.resolve(rd, "", "", True, []) is None  # privileged: never a filter
    assert seccomp.resolve(None, "", "", False, []) is None
    assert seccomp.resolve(None, "", "runtime/default", False, []) is not None
    assert seccomp.resolve(None, "docker/default", "", False, []) is not None
    (tmp_path / "p.json").write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
                "syscalls": [
                    {"name": "read", "action": "SCMP_ACT_ALLOW"},
                    {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
                ],
            }
        )
    )
    local = api_pb2.SecurityProfile(
        profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref=str(tmp_path / "p.json")
    )
    got = seccomp.resolve(local, "", "", False, [])
    assert got == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
        ],
    }
    assert seccomp.resolve(None, f"localhost/{tmp_path}/p.json", "", False, []) == got
    with pytest.raises(NotFoundError):
        seccomp.resolve(
            api_pb2.SecurityProfile(
                profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref=str(tmp_path / "none.json")
            ),
            "",
            "",
            False,
            [],
        )
    with pytest.raises(InvalidArgumentError):
        seccomp.resolve(None, "bogus", "", False, [])


def test_capabilities_opts() -> None:
    all_caps = capabilities.all_capabilities()
    assert "CAP_CHOWN" in all_caps and all(c.startswith("CAP_") for c in all_caps)
    s = default_spec("k8s.io", "c")
    sc = api_pb2.LinuxContainerSecurityContext(
        capabilities=api_pb2.Capability(
            add_capabilities=["NET_ADMIN", "sys_time"], drop_capabilities=["CHOWN"]
        )
    )
    copts.with_capabilities(s, sc, all_caps)
    caps = s["process"]["capabilities"]
    assert "CAP_NET_ADMIN" in caps["bounding"] and "CAP_SYS_TIME" in caps["effective"]
    assert "CAP_CHOWN" not in caps["bounding"] and "CAP_CHOWN" not in caps["permitted"]
    copts.with_capabilities(
        s,
        api_pb2.LinuxContainerSecurityContext(
            capabilities=api_pb2.Capability(drop_capabilities=["ALL"], add_capabilities=["KILL"])
        ),
        all_caps,
    )
    assert s["process"]["capabilities"]["bounding"] == ["CAP_KILL"]
    copts.with_capabilities(
        s,
        api_pb2.LinuxContainerSecurityContext(capabilities=api_pb2.Capability(add_capabilities=["ALL"])),
        all_caps,
    )
    assert s["process"]["capabilities"]["bounding"] == list(all_caps)


def test_resources_and_oom() -> None:
    s = default_spec("k8s.io", "c")
    copts.with_resources(
        s,
        api_pb2.LinuxContainerResources(
            cpu_period=100000, cpu_quota=20000, cpu_shares=512, memory_limit_in_bytes=1 << 26, cpuset_cpus="0"
        ),
    )
    res = s["linux"]["resources"]
    assert res["cpu"] == {"period": 100000, "quota": 20000, "shares": 512, "cpus": "0"}
    assert res["memory"]["limit"] == 1 << 26
    copts.with_oom_score_adj(s, -998, restrict=True)
    assert s["process"]["oomScoreAdj"] >= copts.current_oom_score_adj()
    copts.with_oom_score_adj(s, 500, restrict=True)
    assert s["process"]["oomScoreAdj"] == 500


def test_mounts(tmp_path: Path) -> None:
    s = default_spec("k8s.io", "c")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    mounts = [
        api_pb2.Mount(container_path="/data", host_path=str(tmp_path / "link"), readonly=True),
        api_pb2.Mount(container_path="/new", host_path=str(tmp_path / "created")),
    ]
    extra = [
        api_pb2.Mount(container_path="/etc/hosts", host_path=str(tmp_path / "real")),
        api_pb2.Mount(container_path="/data", host_path="/ignored"),
    ]
    copts.with_cri_mounts(s, mounts, extra, rro_supported=False)
    by_dest = {m["destination"]: m for m in s["mounts"]}
    assert by_dest["/data"]["source"] == str(tmp_path / "real")
    assert by_dest["/data"]["options"] == ["rbind", "rprivate", "ro"]
    assert by_dest["/new"]["options"] == ["rbind", "rprivate", "rw"] and (tmp_path / "created").is_dir()
    assert "/etc/hosts" in by_dest and by_dest["/sys/fs/cgroup"]["type"] == "cgroup"
    with pytest.raises(InvalidArgumentError, match="recursive"):
        copts.with_cri_mounts(
            default_spec("k8s.io", "c"),
            [
                api_pb2.Mount(
                    container_path="/x", host_path=str(tmp_path), readonly=True, recursive_read_only=True
                )
            ],
            [],
            rro_supported=False,
        )
    with pytest.raises(InvalidArgumentError, match="conflicts"):
        copts.with_cri_mounts(
            default_spec("k8s.io", "c"),
            [api_pb2.Mount(container_path="/x", host_path=str(tmp_path), recursive_read_only=True)],
            [],
            rro_supported=True,
        )
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidArgumentError):
        copts.with_cri_mounts(
            default_spec("k8s.io", "c"),
            [api_pb2.Mount(container_path="/x", host_path=str(tmp_path / "file" / "sub"))],
            [],
            rro_supported=False,
        )


def test_userns_mappings() -> None:
    m = api_pb2.IDMapping(container_id=0, host_id=1000, length=10)
    uids, gids = copts.userns_mappings(api_pb2.UserNamespace(mode=api_pb2.POD, uids=[m], gids=[m]))
    assert uids == gids == [{"containerID": 0, "hostID": 1000, "size": 10}]
    assert copts.userns_mappings(api_pb2.UserNamespace(mode=api_pb2.NODE)) == ([], [])
    with pytest.raises(InvalidArgumentError):
        copts.userns_mappings(api_pb2.UserNamespace(mode=api_pb2.POD, uids=[m, m], gids=[m]))
    with pytest.raises(UnimplementedError):
        copts.userns_mappings(api_pb2.UserNamespace(mode=api_pb2.CONTAINER))


def test_oom_score_clamped_without_cap_sys_resource() -> None:
    s = default_spec("k8s.io", "c")
    copts.with_oom_score_adj(s, -998, restrict=False)
    if copts.can_lower_oom_score():
        assert s["process"]["oomScoreAdj"] == -998
    else:
        assert s["process"]["oomScoreAdj"] == max(-998, copts.current_oom_score_adj())
