"""Pods and containers through the CRI against a real daemon, runc and CNI: the life cycle,
logs in the CRI format, ExecSync, status details, lists and filters, and clean-up."""

from __future__ import annotations

import asyncio
import re
import tempfile
from datetime import datetime
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from arun.api.cri.runtime.v1 import api_pb2
from arun.testing.cri import CRIClient, CRIEnv

from .conftest import leftovers, nothing_left

LOG_LINE = re.compile(r"^(\S+) (stdout|stderr) ([FP]) (.*)$")


async def test_version_status_runtime_config(cri: CRIClient) -> None:
    v = await cri.rt.Version(api_pb2.VersionRequest(version="0.1.0"))
    assert v.runtime_name == "arun" and v.runtime_api_version == "v1" and v.version == "0.1.0"
    st = await cri.rt.Status(api_pb2.StatusRequest(verbose=True))
    conds = {c.type: c for c in st.status.conditions}
    assert conds["RuntimeReady"].status and conds["NetworkReady"].status
    assert any(h.name == "" for h in st.runtime_handlers)
    assert "config" in st.info
    rc = await cri.rt.RuntimeConfig(api_pb2.RuntimeConfigRequest())
    assert rc.linux.cgroup_driver == api_pb2.CGROUPFS


async def test_pod_and_container_lifecycle(env: CRIEnv, cri: CRIClient) -> None:
    logdir = Path(tempfile.mkdtemp(prefix="cri-logs-"))
    try:
        pod_cfg = cri.pod_config(
            "lifecycle",
            namespace="tests",
            attempt=1,
            log_directory=str(logdir),
            hostname="lifecycle-host",
            labels={"app": "lifecycle"},
            annotations={"note": "kept"},
        )
        pod = await cri.run_pod(pod_cfg)
        ps = await cri.pod_status(pod, verbose=True)
        assert ps.status.state == api_pb2.SANDBOX_READY
        assert ps.status.metadata.name == "lifecycle" and ps.status.metadata.attempt == 1
        assert ps.status.labels["app"] == "lifecycle" and ps.status.annotations["note"] == "kept"
        assert ps.status.network.ip.startswith(env.subnet.rsplit(".", 1)[0])
        assert '"pid"' in ps.info["info"]

        cid = await cri.create(
            pod,
            "app",
            env.image("busybox"),
            ["sh", "-c", "echo out-line; echo err-line >&2; printf partial; sleep 1000"],
            pod_config=pod_cfg,
            log_path="app.log",
            labels={"tier": "web"},
            annotations={"a": "b"},
            envs=[api_pb2.KeyValue(key="GREETING", value=b"hi")],
        )
        st = await cri.status(cid)
        assert st.state == api_pb2.CONTAINER_CREATED and st.created_at > 0
        assert st.labels["tier"] == "web" and st.annotations["a"] == "b"
        await cri.start(cid)
        st = await cri.wait_state(cid, api_pb2.CONTAINER_RUNNING)
        assert st.started_at >= st.created_at

        # ExecSync: output, exit code, the pod's hostname, env, user.
        r = await cri.exec_sync(cid, ["sh", "-c", "hostname; echo $GREETING; id -u; echo oops >&2; exit 7"])
        assert r.exit_code == 7
        assert r.stdout.decode().split() == ["lifecycle-host", "hi", "0"]
        assert r.stderr == b"oops\n"

        # Logs: CRI format, both streams.
        await asyncio.sleep(0.3)
        lines = (logdir / "app.log").read_text().splitlines()
        parsed = [LOG_LINE.match(line) for line in lines]
        assert all(parsed), lines
        entries = [(m.group(2), m.group(3), m.group(4)) for m in parsed if m]
        assert ("stdout", "F", "out-line") in entries and ("stderr", "F", "err-line") in entries
        for m in parsed:
            assert m is not None
            datetime.fromisoformat(m.group(1).replace("Z", "+00:00")[:26] + "+00:00")

        # Lists with filters.
        lc = await cri.rt.ListContainers(
            api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter(label_selector={"tier": "web"}))
        )
        assert [c.id for c in lc.containers] == [cid]
        lc = await cri.rt.ListContainers(
            api_pb2.ListContainersRequest(
                filter=api_pb2.ContainerFilter(
                    state=api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_EXITED)
                )
            )
        )
        assert cid not in [c.id for c in lc.containers]
        lc = await cri.rt.ListContainers(
            api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter(id=cid[:12]))
        )
        assert [c.id for c in lc.containers] == [cid]
        lp = await cri.rt.ListPodSandbox(
            api_pb2.ListPodSandboxRequest(
                filter=api_pb2.PodSandboxFilter(label_selector={"app": "lifecycle"})
            )
        )
        assert [p.id for p in lp.items] == [pod]

        # Stop: SIGTERM is ignored by the shell's sleep? No: sh exits on TERM; status says why.
        await cri.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=5))
        st = await cri.status(cid)
        assert st.state == api_pb2.CONTAINER_EXITED
        assert st.exit_code == 143 and st.reason == "Error" and st.finished_at >= st.started_at
        lines = (logdir / "app.log").read_text().splitlines()
        assert any(line.endswith(" stdout P partial") for line in lines), lines

        # Stop again and remove twice: idempotent.
        await cri.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=5))
        await cri.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
        await cri.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
        with pytest.raises(GRPCError) as e:
            await cri.status(cid)
        assert e.value.status == Status.NOT_FOUND

        await cri.stop_pod(pod)
        ps = await cri.pod_status(pod)
        assert ps.status.state == api_pb2.SANDBOX_NOTREADY
        await cri.stop_pod(pod)
        await cri.remove_pod(pod)
        await cri.remove_pod(pod)
        assert (await cri.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest())).items == []
        assert nothing_left(env), leftovers(env)
    finally:
        import shutil

        shutil.rmtree(logdir, ignore_errors=True)


async def test_completed_container_and_exit_codes(env: CRIEnv, cri: CRIClient) -> None:
    pod = await cri.run_pod("exits")
    ok = await cri.create(pod, "ok", env.image("busybox"), ["true"])
    bad = await cri.create(pod, "bad", env.image("busybox"), ["sh", "-c", "exit 3"])
    await cri.start(ok)
    await cri.start(bad)
    st_ok = await cri.wait_state(ok, api_pb2.CONTAINER_EXITED)
    st_bad = await cri.wait_state(bad, api_pb2.CONTAINER_EXITED)
    assert (st_ok.exit_code, st_ok.reason) == (0, "Completed")
    assert (st_bad.exit_code, st_bad.reason) == (3, "Error")
    # A stopped container cannot be started again, nor exec'd in.
    with pytest.raises(GRPCError) as e:
        await cri.start(ok)
    assert e.value.status == Status.FAILED_PRECONDITION
    with pytest.raises(GRPCError) as e:
        await cri.exec_sync(ok, ["true"])
    assert e.value.status == Status.FAILED_PRECONDITION
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def test_exec_sync_timeout_kills_the_process(env: CRIEnv, cri: CRIClient) -> None:
    pod = await cri.run_pod("exec-timeout")
    cid = await cri.create(pod, "c", env.image("busybox"), ["sleep", "1000"])
    await cri.start(cid)
    with pytest.raises(GRPCError) as e:
        await cri.exec_sync(cid, ["sleep", "4321"], limit=1)
    assert e.value.status == Status.DEADLINE_EXCEEDED
    r = await cri.exec_sync(cid, ["sh", "-c", "ps -o args | grep 'sleep 4321' | grep -v grep || true"])
    assert r.stdout.strip() == b""
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def test_container_events_stream(env: CRIEnv, cri: CRIClient) -> None:
    seen: list[api_pb2.ContainerEventResponse] = []
    ready = asyncio.Event()

    async def watch() -> None:
        async with cri.rt.GetContainerEvents.open() as stream:
            await stream.send_message(api_pb2.GetEventsRequest(), end=True)
            ready.set()
            async for ev in stream:
                seen.append(ev)

    task = asyncio.create_task(watch())
    await ready.wait()
    await asyncio.sleep(0.2)
    pod = await cri.run_pod("events")
    cid = await cri.create(pod, "c", env.image("busybox"), ["true"])
    await cri.start(cid)
    await cri.wait_state(cid, api_pb2.CONTAINER_EXITED)
    await cri.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    for _ in range(50):
        if any(
            e.container_id == cid and e.container_event_type == api_pb2.CONTAINER_DELETED_EVENT for e in seen
        ):
            break
        await asyncio.sleep(0.1)
    task.cancel()
    mine = [e.container_event_type for e in seen if e.container_id == cid]
    assert mine == [
        api_pb2.CONTAINER_CREATED_EVENT,
        api_pb2.CONTAINER_STARTED_EVENT,
        api_pb2.CONTAINER_STOPPED_EVENT,
        api_pb2.CONTAINER_DELETED_EVENT,
    ]
    started = next(
        e for e in seen if e.container_id == cid and e.container_event_type == api_pb2.CONTAINER_STARTED_EVENT
    )
    assert started.pod_sandbox_status.id == pod
    assert any(s.id == cid for s in started.containers_statuses)
    pod_events = [e.container_event_type for e in seen if e.container_id == pod]
    assert pod_events[:2] == [api_pb2.CONTAINER_CREATED_EVENT, api_pb2.CONTAINER_STARTED_EVENT]
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def test_oom_killed(env: CRIEnv, cri: CRIClient) -> None:
    pod = await cri.run_pod("oom")
    cid = await cri.create(
        pod,
        "hog",
        env.image("busybox"),
        ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=40M"],
        linux=api_pb2.LinuxContainerConfig(
            resources=api_pb2.LinuxContainerResources(
                memory_limit_in_bytes=16 * 1024 * 1024, memory_swap_limit_in_bytes=16 * 1024 * 1024
            )
        ),
    )
    await cri.start(cid)
    st = await cri.wait_state(cid, api_pb2.CONTAINER_EXITED)
    for _ in range(50):
        if st.reason == "OOMKilled":
            break
        await asyncio.sleep(0.1)
        st = await cri.status(cid)
    assert (st.exit_code, st.reason) == (137, "OOMKilled")
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def go_shims(pod: str) -> list[str]:
    import subprocess

    out = await asyncio.to_thread(
        subprocess.run,
        ["pgrep", "-f", f"containerd-shim-runc-v2 .*-id {pod}"],
        capture_output=True,
        text=True,
    )
    return out.stdout.split()


async def test_go_shim_runtime_handler(env: CRIEnv, cri: CRIClient) -> None:
    """A runtime handler with runtime_type io.containerd.runc.v2 runs pods in containerd's Go shim."""
    from arun.testing.cri import GO_SHIM_HANDLER

    logdir = Path(tempfile.mkdtemp(prefix="cri-goshim-"))
    try:
        cfg = cri.pod_config("go-shim", log_directory=str(logdir))
        pod = await cri.run_pod(cfg, handler=GO_SHIM_HANDLER)
        ps = await cri.pod_status(pod, verbose=True)
        assert ps.status.runtime_handler == GO_SHIM_HANDLER
        assert '"runtimeType": "io.containerd.runc.v2"' in ps.info["info"]
        cid = await cri.create(
            pod,
            "c",
            env.image("busybox"),
            ["sh", "-c", "echo from-go-shim; sleep 1000"],
            pod_config=cfg,
            log_path="c.log",
        )
        await cri.start(cid)
        r = await cri.exec_sync(cid, ["sh", "-c", "echo exec-ok; exit 2"])
        assert (r.stdout, r.exit_code) == (b"exec-ok\n", 2)
        await asyncio.sleep(0.3)
        assert " stdout F from-go-shim" in (logdir / "c.log").read_text()
        assert await go_shims(pod), "no containerd-shim-runc-v2 serves the pod"
        await cri.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=2))
        assert (await cri.status(cid)).exit_code == 143
        await cri.stop_pod(pod)
        await cri.remove_pod(pod)
        assert await go_shims(pod) == []
        assert nothing_left(env), leftovers(env)
    finally:
        import shutil

        shutil.rmtree(logdir, ignore_errors=True)
