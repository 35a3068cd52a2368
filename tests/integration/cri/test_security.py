"""Security contexts and namespaces of CRI pods and containers, checked from inside the
containers: users and groups, capabilities, privileges, read-only root and paths, seccomp,
sysctls, PID/IPC/network namespace modes, mount propagation."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from arun.api.cri.runtime.v1 import api_pb2
from arun.testing.cri import CRIClient, CRIEnv

SC = api_pb2.LinuxContainerSecurityContext


def linux(sc: api_pb2.LinuxContainerSecurityContext) -> api_pb2.LinuxContainerConfig:
    return api_pb2.LinuxContainerConfig(security_context=sc)


async def run(
    env: CRIEnv,
    cri: CRIClient,
    pod: str,
    sc: api_pb2.LinuxContainerSecurityContext | None = None,
    image: str = "busybox",
    name: str = "c",
) -> str:
    cid = await cri.create(
        pod,
        name,
        env.image(image),
        ["sleep", "1000"],
        linux=linux(sc) if sc is not None else api_pb2.LinuxContainerConfig(),
    )
    await cri.start(cid)
    return cid


async def host(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command on the host, off the event loop."""
    return await asyncio.to_thread(subprocess.run, list(cmd), capture_output=True, text=True, check=check)


async def sh(cri: CRIClient, cid: str, script: str) -> api_pb2.ExecSyncResponse:
    return await cri.exec_sync(cid, ["sh", "-c", script])


async def test_users_and_groups(env: CRIEnv, cri: CRIClient) -> None:
    await cri.pull(env.image("user-uid"))
    await cri.pull(env.image("user-name"))
    pod = await cri.run_pod("users")
    # Default: root, plus the image's groups of root (none beyond 0).
    c0 = await run(env, cri, pod, name="default")
    assert (await sh(cri, c0, "id -u; id -g")).stdout.split() == [b"0", b"0"]
    # run_as_user with supplemental groups; Merge adds the image's groups of that user.
    c1 = await run(
        env, cri, pod, SC(run_as_user=api_pb2.Int64Value(value=1000), supplemental_groups=[1234]), name="uid"
    )
    out = (await sh(cri, c1, "id -u; id -g; id -G")).stdout.decode().splitlines()
    assert out[0] == "1000" and out[1] == "1000"
    assert sorted(out[2].split(), key=int) == ["29", "50", "1000", "1234"]
    st = await cri.status(c1)
    assert (st.user.linux.uid, st.user.linux.gid) == (1000, 1000)
    assert sorted(st.user.linux.supplemental_groups) == [29, 50, 1000, 1234]
    # Strict: only the primary group and the listed ones.
    c2 = await run(
        env,
        cri,
        pod,
        SC(
            run_as_user=api_pb2.Int64Value(value=1000),
            supplemental_groups=[1234],
            supplemental_groups_policy=api_pb2.Strict,
        ),
        name="strict",
    )
    assert sorted((await sh(cri, c2, "id -G")).stdout.split(), key=int) == [b"1000", b"1234"]
    # run_as_username and run_as_group.
    c3 = await run(
        env,
        cri,
        pod,
        SC(run_as_username="www-data", run_as_group=api_pb2.Int64Value(value=50)),
        name="username",
    )
    assert (await sh(cri, c3, "id -un; id -g")).stdout.split() == [b"www-data", b"50"]
    # The image's user (numeric and by name).
    c4 = await run(env, cri, pod, image="user-uid", name="imguid")
    assert (await sh(cri, c4, "id -u")).stdout.strip() == b"1000"
    c5 = await run(env, cri, pod, image="user-name", name="imgname")
    assert (await sh(cri, c5, "id -un")).stdout.strip() == b"www-data"
    # A group without a user is refused; an unknown user name too.
    with pytest.raises(GRPCError) as e:
        await run(env, cri, pod, SC(run_as_group=api_pb2.Int64Value(value=50)), name="nouser")
    assert e.value.status == Status.INVALID_ARGUMENT
    with pytest.raises(GRPCError) as e:
        await run(env, cri, pod, SC(run_as_username="no-such-user"), name="nosuchuser")
    assert e.value.status == Status.NOT_FOUND
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def test_capabilities_and_privileges(env: CRIEnv, cri: CRIClient) -> None:
    pod = await cri.run_pod("caps")
    plain = await run(env, cri, pod, name="plain")
    assert (await sh(cri, plain, "brctl addbr foobar")).exit_code != 0
    admin = await run(
        env, cri, pod, SC(capabilities=api_pb2.Capability(add_capabilities=["NET_ADMIN"])), name="netadmin"
    )
    assert (await sh(cri, admin, "brctl addbr foobar && brctl delbr foobar")).exit_code == 0
    noraw = await run(
        env, cri, pod, SC(capabilities=api_pb2.Capability(drop_capabilities=["NET_RAW"])), name="noraw"
    )
    r = await sh(cri, noraw, "ping -c 1 127.0.0.1")
    assert r.exit_code != 0 and b"permission denied" in r.stderr.lower()
    allcaps = await run(
        env, cri, pod, SC(capabilities=api_pb2.Capability(add_capabilities=["ALL"])), name="all"
    )
    assert b"CapBnd:\t0000000000000000" not in (await sh(cri, allcaps, "cat /proc/self/status")).stdout
    none = await run(
        env, cri, pod, SC(capabilities=api_pb2.Capability(drop_capabilities=["ALL"])), name="none"
    )
    assert b"CapBnd:\t0000000000000000" in (await sh(cri, none, "cat /proc/self/status")).stdout
    # A privileged container needs a privileged pod.
    with pytest.raises(GRPCError) as e:
        await run(env, cri, pod, SC(privileged=True), name="priv")
    assert e.value.status == Status.INVALID_ARGUMENT
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)

    ppod = await cri.run_pod(
        cri.pod_config(
            "privileged",
            linux=api_pb2.LinuxPodSandboxConfig(
                security_context=api_pb2.LinuxSandboxSecurityContext(privileged=True)
            ),
        )
    )
    priv = await run(env, cri, ppod, SC(privileged=True), name="priv")
    assert (await sh(cri, priv, "brctl addbr foobar && brctl delbr foobar")).exit_code == 0
    assert (await sh(cri, priv, "ls /dev | grep -c .")).stdout.strip() != b""
    assert b"Seccomp:\t0" in (await sh(cri, priv, "cat /proc/self/status")).stdout
    await cri.stop_pod(ppod)
    await cri.remove_pod(ppod)


async def test_read_only_root_and_paths(env: CRIEnv, cri: CRIClient) -> None:
    pod = await cri.run_pod("readonly")
    ro = await run(env, cri, pod, SC(readonly_rootfs=True), name="ro")
    r = await sh(cri, ro, "touch /newfile")
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr
    rw = await run(env, cri, pod, SC(readonly_rootfs=False), name="rw")
    assert (await sh(cri, rw, "touch /newfile")).exit_code == 0
    masked = await run(env, cri, pod, SC(masked_paths=["/etc/group"], readonly_paths=["/tmp"]), name="paths")
    assert (await sh(cri, masked, "cat /etc/group")).stdout == b""
    r = await sh(cri, masked, "touch /tmp/x")
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr
    # The defaults mask /proc/kcore and make /proc/sys read-only.
    assert (await sh(cri, rw, "echo 1 > /proc/sys/kernel/shm_rmid_forced")).exit_code != 0
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def test_seccomp(env: CRIEnv, cri: CRIClient) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cri-seccomp-"))
    try:
        (tmp / "block-chmod.json").write_text(
            json.dumps(
                {
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO"}],
                }
            )
        )
        pod = await cri.run_pod("seccomp")
        cases = {
            "nil": (None, b"0"),
            "unconfined": (api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Unconfined), b"0"),
            "default": (api_pb2.SecurityProfile(), b"2"),
            "localhost": (
                api_pb2.SecurityProfile(
                    profile_type=api_pb2.SecurityProfile.Localhost,
                    localhost_ref=str(tmp / "block-chmod.json"),
                ),
                b"2",
            ),
        }
        for name, (profile, mode) in cases.items():
            sc = SC(seccomp=profile) if profile is not None else SC()
            cid = await run(env, cri, pod, sc, name=name)
            status = (await sh(cri, cid, "grep Seccomp: /proc/self/status")).stdout
            assert status.split()[1] == mode, name
        r = await sh(cri, cid, "chmod 400 /tmp")
        assert r.exit_code != 0 and b"Operation not permitted" in r.stderr
        # RuntimeDefault denies what needs a capability the container lacks (here unshare).
        default = await run(env, cri, pod, SC(seccomp=api_pb2.SecurityProfile()), name="default2")
        assert (await sh(cri, default, "unshare -n true")).exit_code != 0
        # The legacy path field.
        legacy = await run(env, cri, pod, SC(seccomp_profile_path="runtime/default"), name="legacy")
        assert (await sh(cri, legacy, "grep Seccomp: /proc/self/status")).stdout.split()[1] == b"2"
        await cri.stop_pod(pod)
        await cri.remove_pod(pod)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def test_sysctls(env: CRIEnv, cri: CRIClient) -> None:
    pod = await cri.run_pod(
        cri.pod_config(
            "sysctls",
            linux=api_pb2.LinuxPodSandboxConfig(
                sysctls={"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100"}
            ),
        )
    )
    cid = await run(env, cri, pod)
    assert (await sh(cri, cid, "cat /proc/sys/kernel/shm_rmid_forced")).stdout.strip() == b"1"
    assert (await sh(cri, cid, "cat /proc/sys/fs/mqueue/msg_max")).stdout.strip() == b"100"
    assert (await sh(cri, cid, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start")).stdout.strip() == b"0"
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


def _pod_ns(pid: int = 0, ipc: int = 0, network: int = 0) -> api_pb2.LinuxPodSandboxConfig:
    return api_pb2.LinuxPodSandboxConfig(
        security_context=api_pb2.LinuxSandboxSecurityContext(
            namespace_options=api_pb2.NamespaceOption(pid=pid, ipc=ipc, network=network)
        )
    )  # type: ignore[arg-type]


async def test_pid_and_ipc_namespaces(env: CRIEnv, cri: CRIClient) -> None:
    # Pod PID namespace: the pause process is pid 1.
    pod = await cri.run_pod(cri.pod_config("pidns-pod", linux=_pod_ns()))
    c = await run(env, cri, pod, SC(namespace_options=api_pb2.NamespaceOption(pid=api_pb2.POD)))
    assert b"sleep" in (await sh(cri, c, "cat /proc/1/cmdline")).stdout
    assert b"2147483647" in (await sh(cri, c, "cat /proc/1/cmdline")).stdout
    # Container PID namespace: the container's own process is pid 1.
    c2 = await run(
        env, cri, pod, SC(namespace_options=api_pb2.NamespaceOption(pid=api_pb2.CONTAINER)), name="own"
    )
    assert (await sh(cri, c2, "cat /proc/1/cmdline")).stdout == b"sleep\x001000\x00"
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)
    # Host PID: this test's own process is visible.
    hpod = await cri.run_pod(cri.pod_config("pidns-host", linux=_pod_ns(pid=api_pb2.NODE)))
    hc = await run(env, cri, hpod, SC(namespace_options=api_pb2.NamespaceOption(pid=api_pb2.NODE)))
    assert (await sh(cri, hc, f"test -d /proc/{os.getpid()}")).exit_code == 0
    await cri.stop_pod(hpod)
    await cri.remove_pod(hpod)


async def test_host_ipc(env: CRIEnv, cri: CRIClient) -> None:
    out = (await host("ipcmk", "-M", "4096")).stdout
    shmid = out.strip().rsplit(" ", 1)[-1]
    try:
        for mode, visible in ((api_pb2.NODE, True), (api_pb2.POD, False)):
            pod = await cri.run_pod(cri.pod_config(f"ipc-{mode}", linux=_pod_ns(ipc=mode)))
            c = await run(env, cri, pod, SC(namespace_options=api_pb2.NamespaceOption(ipc=mode)))
            segs = (await sh(cri, c, "cat /proc/sysvipc/shm")).stdout.decode()
            ids = {line.split()[1] for line in segs.splitlines()[1:] if line.split()}
            assert (shmid in ids) == visible
            await cri.stop_pod(pod)
            await cri.remove_pod(pod)
    finally:
        await host("ipcrm", "-m", shmid, check=False)


async def test_mount_propagation(env: CRIEnv, cri: CRIClient) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cri-prop-"))
    src = tmp / "mnt"
    src.mkdir()
    await host("mount", "--bind", str(src), str(src))
    await host("mount", "--make-rshared", str(src))
    try:
        ppod = await cri.run_pod(
            cri.pod_config(
                "propagation",
                linux=api_pb2.LinuxPodSandboxConfig(
                    security_context=api_pb2.LinuxSandboxSecurityContext(privileged=True)
                ),
            )
        )
        mounts = [
            api_pb2.Mount(
                container_path=str(src), host_path=str(src), propagation=api_pb2.PROPAGATION_BIDIRECTIONAL
            )
        ]
        cid = await cri.create(
            ppod,
            "c",
            env.image("busybox"),
            ["sleep", "1000"],
            mounts=mounts,
            linux=linux(SC(privileged=True)),
        )
        st = await cri.status(cid)
        assert [m.propagation for m in st.mounts] == [api_pb2.PROPAGATION_BIDIRECTIONAL]
        await cri.start(cid)
        # Host to container.
        (tmp / "from-host").mkdir()
        (tmp / "from-host" / "flag").write_text("x")
        (src / "h").mkdir()
        await host("mount", "--bind", str(tmp / "from-host"), str(src / "h"))
        assert (await sh(cri, cid, f"ls {src}/h")).stdout.strip() == b"flag"
        # Container to host.
        assert (await sh(cri, cid, f"mkdir -p {src}/c && mount --bind /etc {src}/c")).exit_code == 0
        assert (src / "c" / "passwd").exists()
        await cri.stop_pod(ppod)
        await cri.remove_pod(ppod)
    finally:
        await host("umount", "-R", "-l", str(src), check=False)
        shutil.rmtree(tmp, ignore_errors=True)


async def test_user_namespace_modes(env: CRIEnv, cri: CRIClient) -> None:
    def pod_cfg(name: str, userns: api_pb2.UserNamespace) -> api_pb2.PodSandboxConfig:
        return cri.pod_config(
            name,
            linux=api_pb2.LinuxPodSandboxConfig(
                security_context=api_pb2.LinuxSandboxSecurityContext(
                    namespace_options=api_pb2.NamespaceOption(userns_options=userns)
                )
            ),
        )

    node = api_pb2.UserNamespace(mode=api_pb2.NODE)
    pod = await cri.run_pod(pod_cfg("userns-node", node))
    cid = await run(env, cri, pod, SC(namespace_options=api_pb2.NamespaceOption(userns_options=node)))
    with open("/proc/self/uid_map") as f:
        host_map = f.read().split()
    assert (await sh(cri, cid, "cat /proc/self/uid_map")).stdout.split() == [x.encode() for x in host_map]
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)
    # Mode POD: test_userns.py.
    m = api_pb2.IDMapping(container_id=0, host_id=1000, length=100000)
    cases = [
        (Status.INVALID_ARGUMENT, api_pb2.UserNamespace(mode=api_pb2.POD, uids=[m, m], gids=[m, m])),
        (
            Status.INVALID_ARGUMENT,
            api_pb2.UserNamespace(
                mode=api_pb2.POD, uids=[api_pb2.IDMapping(container_id=1, host_id=1000, length=10)], gids=[m]
            ),
        ),
        (Status.UNIMPLEMENTED, api_pb2.UserNamespace(mode=api_pb2.CONTAINER)),
        (Status.UNIMPLEMENTED, api_pb2.UserNamespace(mode=api_pb2.TARGET)),
    ]
    for i, (code, userns) in enumerate(cases):
        with pytest.raises(GRPCError) as e:
            await cri.run_pod(pod_cfg(f"userns-bad-{i}", userns))
        assert e.value.status == code, (i, e.value.message)
    assert (await cri.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest())).items == []


async def test_recursive_read_only_mounts(env: CRIEnv, cri: CRIClient) -> None:
    st = await cri.rt.Status(api_pb2.StatusRequest())
    assert next(h for h in st.runtime_handlers if h.name == "").features.recursive_read_only_mounts
    tmp = Path(tempfile.mkdtemp(prefix="cri-rro-"))
    (tmp / "tmpfs").mkdir()
    await host("mount", "-t", "tmpfs", "none", str(tmp / "tmpfs"))
    try:
        pod = await cri.run_pod("rro")
        ro = api_pb2.Mount(container_path="/mnt", host_path=str(tmp), readonly=True)
        rro = api_pb2.Mount(
            container_path="/mnt", host_path=str(tmp), readonly=True, recursive_read_only=True
        )
        c_ro = await cri.create(pod, "ro", env.image("busybox"), ["sleep", "1000"], mounts=[ro])
        c_rro = await cri.create(pod, "rro", env.image("busybox"), ["sleep", "1000"], mounts=[rro])
        await cri.start(c_ro)
        await cri.start(c_rro)
        assert (await sh(cri, c_ro, "touch /mnt/tmpfs/file")).exit_code == 0
        r = await sh(cri, c_rro, "touch /mnt/tmpfs/other")
        assert r.exit_code != 0 and b"Read-only file system" in r.stderr
        for bad in (
            api_pb2.Mount(
                container_path="/mnt",
                host_path=str(tmp),
                readonly=True,
                recursive_read_only=True,
                propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER,
            ),
            api_pb2.Mount(
                container_path="/mnt", host_path=str(tmp), readonly=False, recursive_read_only=True
            ),
        ):
            with pytest.raises(GRPCError) as e:
                await cri.create(pod, "bad", env.image("busybox"), ["true"], mounts=[bad])
            assert e.value.status == Status.INVALID_ARGUMENT
        await cri.stop_pod(pod)
        await cri.remove_pod(pod)
    finally:
        await host("umount", "-l", str(tmp / "tmpfs"), check=False)
        shutil.rmtree(tmp, ignore_errors=True)


async def test_devices(env: CRIEnv, cri: CRIClient) -> None:
    pod = await cri.run_pod("devices")
    # /dev/kmsg (char 1:11) is not among runc's default devices: the cgroup rule comes from the CRI
    # (rules go by device number, so each access mode gets its own container).
    cids = {}
    for perms in ("r", "rw"):
        dev = api_pb2.Device(host_path="/dev/kmsg", container_path="/dev/my-kmsg", permissions=perms)
        cids[perms] = await cri.create(
            pod, f"c-{perms}", env.image("busybox"), ["sleep", "1000"], devices=[dev]
        )
        await cri.start(cids[perms])
        out = (await sh(cri, cids[perms], "ls -l /dev/my-kmsg")).stdout.decode()
        assert out.startswith("crw") and "1,  11" in out, out
    assert (await sh(cri, cids["rw"], "echo arun-cri-device-test > /dev/my-kmsg")).exit_code == 0
    assert (await sh(cri, cids["r"], "echo arun-cri-device-test > /dev/my-kmsg")).exit_code != 0
    with pytest.raises(GRPCError) as e:
        await cri.create(
            pod,
            "missing",
            env.image("busybox"),
            ["true"],
            devices=[api_pb2.Device(host_path="/dev/does-not-exist", container_path="/dev/x")],
        )
    assert e.value.status == Status.NOT_FOUND
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)
