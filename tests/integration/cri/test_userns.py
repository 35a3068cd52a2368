"""Pods in their own user namespace (NamespaceOption.userns_options, mode POD): the pod's maps
inside every container, one user namespace per pod shared by the pause container and the
containers, a network namespace the pod's user namespace owns (sysfs mounts), root
filesystems owned by the pod's root, host-path mounts, and nothing left behind — no pinned
namespace, no id-mapped view of the layers — after removal or a failed RunPodSandbox."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri import userns as usernslib
from arun.testing.cri import CRIClient, CRIEnv

from .conftest import leftovers, nothing_left

SC = api_pb2.LinuxContainerSecurityContext


@pytest.fixture(scope="module", autouse=True)
def traversable(env: CRIEnv) -> None:
    # The pod's root (an unprivileged uid on the host) must reach the bundle's rootfs through
    # the daemon's directories, as under /run/containerd; the test env's base is mkdtemp 0700.
    assert env.daemon is not None
    for p in (env.base, env.daemon.base, env.daemon.state):
        os.chmod(p, 0o711)


@pytest.fixture(scope="module")
def supported(env: CRIEnv) -> None:
    with tempfile.TemporaryDirectory(prefix="arun-userns-probe-", dir="/var/tmp") as d:
        why = usernslib.probe(d)
    if why:
        if os.environ.get("ARUN_TEST_STRICT") == "1":
            pytest.fail(f"pods with user namespaces are not possible here: {why}")
        pytest.skip(f"pods with user namespaces are not possible here: {why}")


def userns_opts(host_id: int, length: int = 65536) -> api_pb2.UserNamespace:
    m = api_pb2.IDMapping(container_id=0, host_id=host_id, length=length)
    return api_pb2.UserNamespace(mode=api_pb2.POD, uids=[m], gids=[m])


def pod_cfg(
    cri: CRIClient, name: str, userns: api_pb2.UserNamespace, network: int = api_pb2.POD, **sc: object
) -> api_pb2.PodSandboxConfig:
    return cri.pod_config(
        name,
        linux=api_pb2.LinuxPodSandboxConfig(
            security_context=api_pb2.LinuxSandboxSecurityContext(
                namespace_options=api_pb2.NamespaceOption(userns_options=userns, network=network), **sc
            )
        ),
    )


def random_host_id() -> int:
    # A range of its own per test run, far from the ids of real users.
    return 0x100000 + secrets.randbelow(0x400) * 0x10000


async def sh(cri: CRIClient, cid: str, script: str) -> str:
    r = await cri.exec_sync(cid, ["sh", "-c", script])
    assert r.exit_code == 0, (script, r.stdout, r.stderr)
    return str(r.stdout.decode())


def mountinfo() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


def pinned_userns_mounts(env: CRIEnv) -> list[str]:
    assert env.daemon is not None
    return [m for m in mountinfo() if "nsfs" in m and "user:[" in m and str(env.daemon.base) in m]


def idmap_views(env: CRIEnv) -> list[str]:
    assert env.daemon is not None
    return [m for m in mountinfo() if str(env.daemon.base) in m and "/idmap-" in m.split(" - ")[0]]


async def test_status_reports_user_namespaces(env: CRIEnv, cri: CRIClient, supported: None) -> None:
    st = await cri.rt.Status(api_pb2.StatusRequest())
    assert st.runtime_handlers
    assert all(h.features.user_namespaces for h in st.runtime_handlers)


async def test_pod_user_namespace(env: CRIEnv, cri: CRIClient, supported: None) -> None:
    host_id = random_host_id()
    opts = userns_opts(host_id)
    cfg = pod_cfg(cri, "userns-pod", opts)
    pod = await cri.run_pod(cfg)
    assert len(pinned_userns_mounts(env)) == 1
    with tempfile.TemporaryDirectory(prefix="arun-userns-vol-") as vol:
        os.chmod(vol, 0o755)
        Path(vol, "hello").write_text("from the host\n")
        os.chmod(Path(vol, "hello"), 0o644)
        c_sc = SC(namespace_options=api_pb2.NamespaceOption(userns_options=opts))
        cids = []
        for name in ("a", "b"):
            cid = await cri.create(
                pod,
                name,
                env.image("busybox"),
                ["sleep", "1000"],
                pod_config=cfg,
                linux=api_pb2.LinuxContainerConfig(security_context=c_sc),
                mounts=[api_pb2.Mount(container_path="/vol", host_path=vol, readonly=True)],
            )
            await cri.start(cid)
            cids.append(cid)
        # The id-mapped views of the layers are gone once the root filesystems are mounted.
        assert idmap_views(env) == []
        a, b = cids
        # The pod's maps, in both containers; one user namespace for the pod, not the host's.
        for cid in cids:
            assert (await sh(cri, cid, "cat /proc/self/uid_map")).split() == ["0", str(host_id), "65536"]
            assert (await sh(cri, cid, "cat /proc/self/gid_map")).split() == ["0", str(host_id), "65536"]
        ns_a = await sh(cri, a, "readlink /proc/self/ns/user")
        assert ns_a == await sh(cri, b, "readlink /proc/self/ns/user")
        assert ns_a.strip() != os.readlink("/proc/self/ns/user")
        # The root filesystem belongs to the pod's root, and the pod's root can write to it.
        assert (await sh(cri, a, "id -u; stat -c '%u:%g' / /bin /etc/passwd")).split() == [
            "0",
            "0:0",
            "0:0",
            "0:0",
        ]
        assert (await sh(cri, a, "echo x > /new && stat -c '%u:%g' /new")).strip() == "0:0"
        st = await cri.status(a, verbose=True)
        assert st.state == api_pb2.CONTAINER_RUNNING
        # The network namespace belongs to the pod's user namespace: sysfs is mounted and
        # shows the pod's interfaces, and CNI gave it its address.
        nets = (await sh(cri, a, "ls /sys/class/net")).split()
        assert "eth0" in nets and "lo" in nets
        ip = (await cri.pod_status(pod)).status.network.ip
        assert ip and ip in await sh(cri, a, "ip -4 addr show eth0")
        # A host path: readable; its host-root owner is unmapped in the pod (the overflow id).
        assert await sh(cri, b, "cat /vol/hello") == "from the host\n"
        assert (await sh(cri, b, "stat -c '%u' /vol/hello")).strip() == "65534"
        r = await cri.exec_sync(b, ["sh", "-c", "echo y > /vol/other"])
        assert r.exit_code != 0
        # A container whose user namespace settings differ from its pod's is refused.
        with pytest.raises(GRPCError) as e:
            await cri.create(
                pod,
                "other",
                env.image("busybox"),
                ["true"],
                pod_config=cfg,
                linux=api_pb2.LinuxContainerConfig(
                    security_context=SC(
                        namespace_options=api_pb2.NamespaceOption(userns_options=userns_opts(host_id + 1))
                    )
                ),
            )
        assert e.value.status == Status.INVALID_ARGUMENT
        await cri.stop_pod(pod)
        await cri.remove_pod(pod)
    assert pinned_userns_mounts(env) == []
    assert idmap_views(env) == []
    assert nothing_left(env), leftovers(env)


async def test_pod_user_namespace_with_host_network(env: CRIEnv, cri: CRIClient, supported: None) -> None:
    host_id = random_host_id()
    opts = userns_opts(host_id)
    cfg = pod_cfg(cri, "userns-hostnet", opts, network=api_pb2.NODE)
    pod = await cri.run_pod(cfg)
    cid = await cri.create(
        pod,
        "c",
        env.image("busybox"),
        ["sleep", "1000"],
        pod_config=cfg,
        linux=api_pb2.LinuxContainerConfig(
            security_context=SC(
                namespace_options=api_pb2.NamespaceOption(userns_options=opts, network=api_pb2.NODE)
            )
        ),
    )
    await cri.start(cid)
    assert (await sh(cri, cid, "cat /proc/self/uid_map")).split() == ["0", str(host_id), "65536"]
    assert os.path.exists("/sys/class/net/lo")
    assert "lo" in (await sh(cri, cid, "ls /sys/class/net")).split()
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)
    assert pinned_userns_mounts(env) == []
    assert nothing_left(env), leftovers(env)


async def test_bad_user_namespace_options(env: CRIEnv, cri: CRIClient, supported: None) -> None:
    m = api_pb2.IDMapping(container_id=0, host_id=1000, length=100000)
    cases = [
        (Status.INVALID_ARGUMENT, api_pb2.UserNamespace(mode=api_pb2.POD, uids=[m, m], gids=[m, m])),
        (
            Status.INVALID_ARGUMENT,
            api_pb2.UserNamespace(
                mode=api_pb2.POD, uids=[api_pb2.IDMapping(container_id=1, host_id=1000, length=10)], gids=[m]
            ),
        ),
        (
            Status.INVALID_ARGUMENT,
            api_pb2.UserNamespace(
                mode=api_pb2.POD, uids=[m], gids=[api_pb2.IDMapping(container_id=0, host_id=1000, length=0)]
            ),
        ),
        (Status.INVALID_ARGUMENT, api_pb2.UserNamespace(mode=api_pb2.POD, uids=[m])),
        (Status.INVALID_ARGUMENT, api_pb2.UserNamespace(mode=api_pb2.NODE, uids=[m], gids=[m])),
        (Status.UNIMPLEMENTED, api_pb2.UserNamespace(mode=api_pb2.CONTAINER)),
        (Status.UNIMPLEMENTED, api_pb2.UserNamespace(mode=api_pb2.TARGET)),
    ]
    for i, (code, userns) in enumerate(cases):
        with pytest.raises(GRPCError) as e:
            await cri.run_pod(pod_cfg(cri, f"userns-bad-{i}", userns))
        assert e.value.status == code, (i, e.value.message)
    assert (await cri.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest())).items == []
    assert pinned_userns_mounts(env) == []
    assert nothing_left(env), leftovers(env)


async def test_failed_run_pod_sandbox_unpins(env: CRIEnv, cri: CRIClient, supported: None) -> None:
    # The namespaces are made before the pause container's spec, which fails on this profile:
    # the pinned user namespace and the network namespace must go again.
    bogus = api_pb2.SecurityProfile(
        profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref="/nonexistent/profile.json"
    )
    cfg = pod_cfg(cri, "userns-fails", userns_opts(random_host_id()), seccomp=bogus)
    with pytest.raises(GRPCError):
        await cri.run_pod(cfg)
    assert (await cri.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest())).items == []
    assert pinned_userns_mounts(env) == []
    assert idmap_views(env) == []
    assert nothing_left(env), leftovers(env)
