"""Stats, metrics, resource updates and log reopening through the CRI of a real daemon."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from arun.api.cri.runtime.v1 import api_pb2
from arun.testing.cri import CRIClient, CRIEnv

# What critest requires of ListPodSandboxMetrics (its list minus the optional and unimplemented ones).
REQUIRED_METRICS = {
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total",
    "container_cpu_system_seconds_total",
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_file_descriptors",
    "container_fs_inodes_free",
    "container_fs_inodes_total",
    "container_fs_limit_bytes",
    "container_fs_usage_bytes",
    "container_last_seen",
    "container_memory_cache",
    "container_memory_failcnt",
    "container_memory_failures_total",
    "container_memory_kernel_usage",
    "container_memory_mapped_file",
    "container_memory_max_usage_bytes",
    "container_memory_rss",
    "container_memory_swap",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_network_receive_bytes_total",
    "container_network_receive_errors_total",
    "container_network_receive_packets_dropped_total",
    "container_network_receive_packets_total",
    "container_network_transmit_bytes_total",
    "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total",
    "container_network_transmit_packets_total",
    "container_oom_events_total",
    "container_processes",
    "container_sockets",
    "container_spec_cpu_period",
    "container_spec_cpu_shares",
    "container_spec_memory_limit_bytes",
    "container_spec_memory_swap_limit_bytes",
    "container_start_time_seconds",
    "container_threads",
    "container_threads_max",
}


async def test_container_and_pod_stats(env: CRIEnv, cri: CRIClient) -> None:
    pod = await cri.run_pod(cri.pod_config("stats", labels={"s": "1"}))
    busy = await cri.create(
        pod, "busy", env.image("busybox"), ["sh", "-c", "while true; do :; done"], labels={"kind": "busy"}
    )
    idle = await cri.create(pod, "idle", env.image("busybox"), ["sleep", "1000"], labels={"kind": "idle"})
    created = await cri.create(pod, "created", env.image("busybox"), ["sleep", "1000"])
    await cri.start(busy)
    await cri.start(idle)
    one = await cri.rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=busy))
    assert one.stats.attributes.id == busy and one.stats.attributes.metadata.name == "busy"
    assert one.stats.cpu.timestamp > 0 and one.stats.memory.timestamp > 0
    assert one.stats.memory.working_set_bytes.value > 0
    await asyncio.sleep(0.5)
    again = await cri.rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=busy))
    assert again.stats.cpu.usage_core_nano_seconds.value > one.stats.cpu.usage_core_nano_seconds.value
    assert again.stats.cpu.usage_nano_cores.value > 0
    listed = await cri.rt.ListContainerStats(api_pb2.ListContainerStatsRequest())
    assert {busy, idle, created} <= {s.attributes.id for s in listed.stats}
    by_label = await cri.rt.ListContainerStats(
        api_pb2.ListContainerStatsRequest(
            filter=api_pb2.ContainerStatsFilter(label_selector={"kind": "idle"})
        )
    )
    assert [s.attributes.id for s in by_label.stats] == [idle]
    by_pod = await cri.rt.ListContainerStats(
        api_pb2.ListContainerStatsRequest(filter=api_pb2.ContainerStatsFilter(pod_sandbox_id=pod))
    )
    assert len(by_pod.stats) == 3
    async with cri.rt.StreamContainerStats.open() as stream:
        await stream.send_message(api_pb2.StreamContainerStatsRequest(), end=True)
        streamed = [s.attributes.id async for msg in stream for s in msg.container_stats]
    assert {busy, idle} <= set(streamed)

    ps = await cri.rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod))
    assert ps.stats.attributes.id == pod
    assert {c.attributes.id for c in ps.stats.linux.containers} == {busy, idle}
    assert ps.stats.linux.network.default_interface.name == "eth0"
    assert ps.stats.linux.memory.working_set_bytes.value > 0
    lps = await cri.rt.ListPodSandboxStats(
        api_pb2.ListPodSandboxStatsRequest(filter=api_pb2.PodSandboxStatsFilter(label_selector={"s": "1"}))
    )
    assert [s.attributes.id for s in lps.stats] == [pod]
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def test_metrics(env: CRIEnv, cri: CRIClient) -> None:
    descs = (await cri.rt.ListMetricDescriptors(api_pb2.ListMetricDescriptorsRequest())).descriptors
    by_name = {d.name: d for d in descs}
    assert REQUIRED_METRICS <= set(by_name)
    assert all(d.help and d.label_keys for d in descs)
    pod = await cri.run_pod("metrics")
    cid = await cri.create(
        pod,
        "c",
        env.image("busybox"),
        ["sleep", "1000"],
        linux=api_pb2.LinuxContainerConfig(
            resources=api_pb2.LinuxContainerResources(
                cpu_period=100000, cpu_quota=20000, cpu_shares=1024, memory_limit_in_bytes=64 << 20
            )
        ),
    )
    await cri.start(cid)
    resp = await cri.rt.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest())
    mine = next(m for m in resp.pod_metrics if m.pod_sandbox_id == pod)
    found: dict[str, list[str]] = {}
    for m in list(mine.metrics) + [m for c in mine.container_metrics for m in c.metrics]:
        found.setdefault(m.name, list(m.label_values))
    assert REQUIRED_METRICS <= set(found)
    for name, values in found.items():
        assert len(values) == len(by_name[name].label_keys), name
    values = {m.name: m.value.value for c in mine.container_metrics for m in c.metrics}
    assert values["container_spec_memory_limit_bytes"] == 64 << 20
    assert values["container_spec_cpu_shares"] == 1024
    assert values["container_threads"] >= 1
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def test_update_resources(env: CRIEnv, cri: CRIClient) -> None:
    pod = await cri.run_pod("update")
    cid = await cri.create(pod, "c", env.image("busybox"), ["sleep", "1000"])
    await cri.start(cid)
    new = api_pb2.LinuxContainerResources(memory_limit_in_bytes=48 << 20, cpu_shares=512)
    await cri.rt.UpdateContainerResources(
        api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=new)
    )
    st = await cri.status(cid)
    assert st.resources.linux.memory_limit_in_bytes == 48 << 20
    assert st.resources.linux.cpu_shares == 512
    r = await cri.exec_sync(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
    if r.exit_code == 0:
        assert int(r.stdout) == 48 << 20
    else:
        r = await cri.exec_sync(cid, ["cat", "/sys/fs/cgroup/memory.max"])
        assert int(r.stdout) == 48 << 20
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)


async def test_reopen_container_log(env: CRIEnv, cri: CRIClient) -> None:
    logdir = Path(tempfile.mkdtemp(prefix="cri-reopen-"))
    try:
        cfg = cri.pod_config("reopen", log_directory=str(logdir))
        pod = await cri.run_pod(cfg)
        cid = await cri.create(
            pod,
            "c",
            env.image("busybox"),
            ["sh", "-c", "while true; do echo tick; sleep 0.1; done"],
            log_path="c.log",
        )
        await cri.start(cid)
        await asyncio.sleep(0.5)
        (logdir / "c.log").rename(logdir / "c.log.1")
        await cri.rt.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=cid))
        assert (logdir / "c.log").exists()
        old = (logdir / "c.log.1").read_text()
        await asyncio.sleep(0.5)
        assert (logdir / "c.log.1").read_text() == old
        assert " stdout F tick" in (logdir / "c.log").read_text()
        await cri.stop_pod(pod)
        await cri.remove_pod(pod)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


async def test_runtime_config_update_and_pod_resources(env: CRIEnv, cri: CRIClient) -> None:
    await cri.rt.UpdateRuntimeConfig(
        api_pb2.UpdateRuntimeConfigRequest(
            runtime_config=api_pb2.RuntimeConfig(
                network_config=api_pb2.NetworkConfig(pod_cidr="10.99.0.0/16")
            )
        )
    )
    pod = await cri.run_pod("podres")
    await cri.rt.UpdatePodSandboxResources(
        api_pb2.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=pod, resources=api_pb2.LinuxContainerResources(cpu_shares=256)
        )
    )
    await cri.stop_pod(pod)
    await cri.remove_pod(pod)
