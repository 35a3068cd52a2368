"""Bad input to the CRI: each a clear error with the right gRPC code, and nothing left behind —
no network namespace, no mount, no shim, no bundle, no directory, no record."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from arun.api.containerd.services.containers.v1 import containers_grpc, containers_pb2
from arun.api.cri.runtime.v1 import api_pb2
from arun.testing.cri import CRIClient, CRIEnv

from .conftest import leftovers, nothing_left


async def records(cri: CRIClient) -> list[str]:
    stub = containers_grpc.ContainersStub(cri.channel)
    resp = await stub.List(
        containers_pb2.ListContainersRequest(), metadata={"containerd-namespace": "k8s.io"}
    )
    return [c.id for c in resp.containers]


def mounts_mentioning(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


async def assert_clean(env: CRIEnv, cri: CRIClient) -> None:
    assert (await cri.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest())).items == []
    assert (await cri.rt.ListContainers(api_pb2.ListContainersRequest())).containers == []
    assert await records(cri) == []
    assert nothing_left(env), leftovers(env)
    assert env.daemon is not None
    assert mounts_mentioning(env.daemon.base) == []


async def expect(code: Status, coro: object) -> GRPCError:
    with pytest.raises(GRPCError) as e:
        await coro  # type: ignore[misc]
    assert e.value.status == code, e.value.message
    assert e.value.message
    return e.value


async def test_unknown_runtime_handler(env: CRIEnv, cri: CRIClient) -> None:
    err = await expect(
        Status.INVALID_ARGUMENT, cri.run_pod(cri.pod_config("bad-handler"), handler="no-such-handler")
    )
    assert "no-such-handler" in (err.message or "")
    await assert_clean(env, cri)


async def test_sandbox_config_without_metadata(env: CRIEnv, cri: CRIClient) -> None:
    await expect(
        Status.INVALID_ARGUMENT,
        cri.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=api_pb2.PodSandboxConfig())),
    )
    await assert_clean(env, cri)


async def test_missing_image(env: CRIEnv, cri: CRIClient) -> None:
    pod = await cri.run_pod("missing-image")
    missing = env.image("busybox").replace("busybox:1", "does-not-exist:1")
    err = await expect(Status.NOT_FOUND, cri.create(pod, "c", missing, ["true"]))
    assert "does-not-exist" in (err.message or "")
    # Pulling it fails too, and leaves no image behind.
    await expect(Status.NOT_FOUND, cri.pull(missing))
    listed = await cri.img.ListImages(api_pb2.ListImagesRequest())
    assert not any("does-not-exist" in t for i in listed.images for t in i.repo_tags)
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)
    await assert_clean(env, cri)


async def test_invalid_log_path(env: CRIEnv, cri: CRIClient) -> None:
    logdir = Path(tempfile.mkdtemp(prefix="cri-badlog-"))
    try:
        cfg = cri.pod_config("bad-log", log_directory=str(logdir))
        pod = await cri.run_pod(cfg)
        for bad in ("../escape.log", "no/such/dir/c.log", "."):
            await expect(
                Status.INVALID_ARGUMENT,
                cri.create(pod, f"c{len(bad)}", env.image("busybox"), ["true"], log_path=bad),
            )
        assert os.listdir(logdir) == []
        assert (await cri.rt.ListContainers(api_pb2.ListContainersRequest())).containers == []
        await cri.stop_pod(pod)
        await cri.remove_pod(pod)
        await assert_clean(env, cri)
    finally:
        import shutil

        shutil.rmtree(logdir, ignore_errors=True)


async def test_host_path_that_cannot_exist(env: CRIEnv, cri: CRIClient) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cri-badmount-"))
    try:
        (tmp / "file").write_text("a regular file")
        pod = await cri.run_pod("bad-mount")
        mounts = [api_pb2.Mount(container_path="/mnt", host_path=str(tmp / "file" / "sub"))]
        await expect(
            Status.INVALID_ARGUMENT, cri.create(pod, "c", env.image("busybox"), ["true"], mounts=mounts)
        )
        # A host path that does not exist yet is created, as containerd does.
        fresh = tmp / "fresh" / "dir"
        cid = await cri.create(
            pod,
            "ok",
            env.image("busybox"),
            ["sleep", "100"],
            mounts=[api_pb2.Mount(container_path="/mnt", host_path=str(fresh))],
        )
        assert fresh.is_dir()
        await cri.start(cid)
        await cri.stop_pod(pod)
        await cri.remove_pod(pod)
        await assert_clean(env, cri)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


async def test_bogus_seccomp_profiles(env: CRIEnv, cri: CRIClient) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cri-seccomp-"))
    try:
        (tmp / "garbage.json").write_text("{not json")
        (tmp / "no-action.json").write_text(json.dumps({"syscalls": []}))
        pod = await cri.run_pod("bad-seccomp")
        cases = [
            (Status.NOT_FOUND, str(tmp / "missing.json")),
            (Status.INVALID_ARGUMENT, str(tmp / "garbage.json")),
            (Status.INVALID_ARGUMENT, str(tmp / "no-action.json")),
            (Status.INVALID_ARGUMENT, "relative/profile.json"),
        ]
        for i, (code, ref) in enumerate(cases):
            sc = api_pb2.LinuxContainerSecurityContext(
                seccomp=api_pb2.SecurityProfile(
                    profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref=ref
                )
            )
            await expect(
                code,
                cri.create(
                    pod,
                    f"c{i}",
                    env.image("busybox"),
                    ["true"],
                    linux=api_pb2.LinuxContainerConfig(security_context=sc),
                ),
            )
        legacy = api_pb2.LinuxContainerSecurityContext(seccomp_profile_path="weird/profile")
        await expect(
            Status.INVALID_ARGUMENT,
            cri.create(
                pod,
                "legacy",
                env.image("busybox"),
                ["true"],
                linux=api_pb2.LinuxContainerConfig(security_context=legacy),
            ),
        )
        assert (await cri.rt.ListContainers(api_pb2.ListContainersRequest())).containers == []
        await cri.stop_pod(pod)
        await cri.remove_pod(pod)
        await assert_clean(env, cri)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


async def test_duplicate_names_and_kubelet_retries(env: CRIEnv, cri: CRIClient) -> None:
    cfg = cri.pod_config("dup", uid="fixed-uid")
    # The same request twice at once (kubelet retrying while the first runs): one pod.
    first, again = await asyncio.gather(cri.run_pod(cfg), cri.run_pod(cfg))
    assert first == again
    # And once more after it finished.
    assert await cri.run_pod(cfg) == first
    # The same name with another config is refused.
    other = cri.pod_config("dup", uid="fixed-uid", labels={"different": "config"})
    await expect(Status.ALREADY_EXISTS, cri.run_pod(other))
    assert len((await cri.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest())).items) == 1
    # Containers: the same.
    a, b = await asyncio.gather(
        cri.create(first, "c", env.image("busybox"), ["true"]),
        cri.create(first, "c", env.image("busybox"), ["true"]),
    )
    assert a == b
    await expect(Status.ALREADY_EXISTS, cri.create(first, "c", env.image("busybox"), ["false"]))
    assert len((await cri.rt.ListContainers(api_pb2.ListContainersRequest())).containers) == 1
    # Removing frees the names.
    await cri.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=a))
    c2 = await cri.create(first, "c", env.image("busybox"), ["false"])
    assert c2 != a
    await cri.stop_pod(first)
    await cri.remove_pod(first)
    assert await cri.run_pod(other) != first
    await cri.remove_all_pods()
    await assert_clean(env, cri)


async def test_unknown_ids(env: CRIEnv, cri: CRIClient) -> None:
    await expect(Status.NOT_FOUND, cri.status("0123456789abcdef"))
    await expect(Status.NOT_FOUND, cri.pod_status("0123456789abcdef"))
    await expect(Status.NOT_FOUND, cri.start("0123456789abcdef"))
    await expect(Status.NOT_FOUND, cri.exec_sync("0123456789abcdef", ["true"]))
    await expect(Status.NOT_FOUND, cri.create("0123456789abcdef", "c", env.image("busybox"), ["true"]))
    # Stop and remove of unknown objects succeed (kubelet relies on it).
    await cri.rt.StopContainer(api_pb2.StopContainerRequest(container_id="0123456789abcdef"))
    await cri.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id="0123456789abcdef"))
    await cri.stop_pod("0123456789abcdef")
    await cri.remove_pod("0123456789abcdef")
    await cri.img.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image="0" * 64)))
    await expect(Status.UNIMPLEMENTED, cri.rt.CheckpointContainer(api_pb2.CheckpointContainerRequest()))
    await expect(Status.UNIMPLEMENTED, cri.rt.CheckpointPod(api_pb2.CheckpointPodRequest()))
    await expect(Status.UNIMPLEMENTED, cri.rt.RestorePod(api_pb2.RestorePodRequest()))


def reserved_ips(network: str) -> list[str]:
    """The addresses host-local holds for ``network`` (its bookkeeping files aside)."""
    d = Path("/var/lib/cni/networks") / network
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n != "lock" and not n.startswith("last_reserved_ip"))


async def test_pod_failing_after_its_network_leaves_nothing(env: CRIEnv, cri: CRIClient) -> None:
    # vm.swappiness is not namespaced: runc refuses it when it creates the pause container,
    # after the netns exists and CNI gave the pod an address. All of it must be undone.
    cfg = cri.pod_config("late-failure", linux=api_pb2.LinuxPodSandboxConfig(sysctls={"vm.swappiness": "10"}))
    with pytest.raises(GRPCError) as e:
        await cri.run_pod(cfg)
    assert "swappiness" in (e.value.message or "")
    assert reserved_ips(env.network) == []
    await assert_clean(env, cri)
    # The name is free again.
    pod = await cri.run_pod(cri.pod_config("late-failure"))
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)
    await assert_clean(env, cri)
    assert reserved_ips(env.network) == []
