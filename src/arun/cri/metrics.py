"""ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor-style metrics kubelet can serve
for pods (the CRI "metrics from the runtime" path).

Every metric carries the label values of its descriptor's keys: ``pod``, ``namespace``,
``container``, ``id``, ``image`` (plus ``interface`` for network metrics, ``device``
for filesystem metrics, ``failure_type``/``scope`` for memory failures and
``major``/``minor``/``operation`` for block I/O). Pod-level metrics (network) have an
empty container and image and the sandbox id. Values come from the cgroups (via the
shims' Stats), ``/proc`` (file descriptors, sockets, network counters) and the
snapshotter (writable layer usage).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.stats import Sample, fds_of, layer_usage, read_net_dev, sample
from arun.cri.store.container import Container
from arun.cri.store.sandbox import Sandbox, SandboxState

BASE = ("pod", "namespace", "container", "id", "image")
NETWORK = (*BASE, "interface")
DISK = (*BASE, "device")
MEMORY_FAILURES = (*BASE, "failure_type", "scope")
BLKIO = (*BASE, "device", "major", "minor", "operation")

COUNTER = api_pb2.COUNTER
GAUGE = api_pb2.GAUGE


@dataclass(frozen=True)
class Desc:
    name: str
    help: str
    keys: tuple[str, ...]
    kind: api_pb2.MetricType

    def proto(self) -> api_pb2.MetricDescriptor:
        return api_pb2.MetricDescriptor(name=self.name, help=self.help, label_keys=list(self.keys))


_D = Desc
DESCRIPTORS: dict[str, Desc] = {
    d.name: d
    for d in (
        # CPU
        _D("container_cpu_user_seconds_total", "CPU time spent in user mode, in seconds.", BASE, COUNTER),
        _D("container_cpu_system_seconds_total", "CPU time spent in kernel mode, in seconds.", BASE, COUNTER),
        _D("container_cpu_usage_seconds_total", "Total CPU time used, in seconds.", BASE, COUNTER),
        _D("container_cpu_cfs_periods_total", "CFS enforcement periods that have elapsed.", BASE, COUNTER),
        _D(
            "container_cpu_cfs_throttled_periods_total",
            "CFS periods in which the container was throttled.",
            BASE,
            COUNTER,
        ),
        _D(
            "container_cpu_cfs_throttled_seconds_total",
            "Time the container spent throttled, in seconds.",
            BASE,
            COUNTER,
        ),
        # Memory
        _D("container_memory_cache", "Page cache used by the container, in bytes.", BASE, GAUGE),
        _D(
            "container_memory_rss",
            "Anonymous memory (and swap cache) of the container, in bytes.",
            BASE,
            GAUGE,
        ),
        _D("container_memory_kernel_usage", "Kernel memory charged to the container, in bytes.", BASE, GAUGE),
        _D("container_memory_mapped_file", "Memory-mapped files of the container, in bytes.", BASE, GAUGE),
        _D("container_memory_swap", "Swap used by the container, in bytes.", BASE, GAUGE),
        _D("container_memory_failcnt", "Times the memory usage hit the cgroup v1 limit.", BASE, COUNTER),
        _D("container_memory_usage_bytes", "Memory in use, including cache, in bytes.", BASE, GAUGE),
        _D("container_memory_max_usage_bytes", "Highest memory usage seen, in bytes.", BASE, GAUGE),
        _D(
            "container_memory_working_set_bytes",
            "Memory in active use (usage minus inactive file cache), in bytes.",
            BASE,
            GAUGE,
        ),
        _D("container_memory_total_active_file_bytes", "Active file-backed cache, in bytes.", BASE, GAUGE),
        _D(
            "container_memory_total_inactive_file_bytes", "Inactive file-backed cache, in bytes.", BASE, GAUGE
        ),
        _D(
            "container_memory_failures_total",
            "Memory allocation failures (page faults by type and scope).",
            MEMORY_FAILURES,
            COUNTER,
        ),
        _D("container_oom_events_total", "OOM kills in the container's cgroup.", BASE, COUNTER),
        # Network (pod level)
        _D("container_network_receive_bytes_total", "Bytes received.", NETWORK, COUNTER),
        _D("container_network_receive_packets_total", "Packets received.", NETWORK, COUNTER),
        _D("container_network_receive_packets_dropped_total", "Received packets dropped.", NETWORK, COUNTER),
        _D("container_network_receive_errors_total", "Errors while receiving.", NETWORK, COUNTER),
        _D("container_network_transmit_bytes_total", "Bytes sent.", NETWORK, COUNTER),
        _D("container_network_transmit_packets_total", "Packets sent.", NETWORK, COUNTER),
        _D("container_network_transmit_packets_dropped_total", "Sent packets dropped.", NETWORK, COUNTER),
        _D("container_network_transmit_errors_total", "Errors while sending.", NETWORK, COUNTER),
        # Filesystem usage
        _D("container_fs_inodes_free", "Free inodes on the filesystem of the writable layer.", DISK, GAUGE),
        _D("container_fs_inodes_total", "Inodes of the filesystem of the writable layer.", DISK, GAUGE),
        _D(
            "container_fs_limit_bytes", "Size of the filesystem of the writable layer, in bytes.", DISK, GAUGE
        ),
        _D("container_fs_usage_bytes", "Bytes used by the container's writable layer.", DISK, GAUGE),
        # Disk I/O (optional values)
        _D("container_fs_reads_bytes_total", "Bytes read from block devices.", DISK, COUNTER),
        _D("container_fs_reads_total", "Reads from block devices.", DISK, COUNTER),
        _D("container_fs_writes_bytes_total", "Bytes written to block devices.", DISK, COUNTER),
        _D("container_fs_writes_total", "Writes to block devices.", DISK, COUNTER),
        _D(
            "container_blkio_device_usage_total",
            "Block I/O by device and operation, in bytes.",
            BLKIO,
            COUNTER,
        ),
        # Processes
        _D("container_processes", "Processes running in the container.", BASE, GAUGE),
        _D(
            "container_file_descriptors",
            "Open file descriptors of the container's main process.",
            BASE,
            GAUGE,
        ),
        _D("container_sockets", "Open sockets of the container's main process.", BASE, GAUGE),
        _D("container_threads_max", "Task limit of the container's pids cgroup (0: none).", BASE, GAUGE),
        _D("container_threads", "Tasks (threads) in the container's pids cgroup.", BASE, GAUGE),
        # Miscellaneous
        _D("container_last_seen", "When these metrics were collected, in Unix seconds.", BASE, GAUGE),
        _D("container_start_time_seconds", "When the container started, in Unix seconds.", BASE, GAUGE),
        # Spec
        _D("container_spec_cpu_period", "CFS period of the container, in microseconds.", BASE, GAUGE),
        _D("container_spec_cpu_shares", "CPU shares of the container.", BASE, GAUGE),
        _D("container_spec_memory_limit_bytes", "Memory limit of the container, in bytes.", BASE, GAUGE),
        _D(
            "container_spec_memory_reservation_limit_bytes",
            "Memory reservation of the container, in bytes.",
            BASE,
            GAUGE,
        ),
        _D(
            "container_spec_memory_swap_limit_bytes",
            "Memory plus swap limit of the container, in bytes.",
            BASE,
            GAUGE,
        ),
    )
}


async def list_metric_descriptors(
    c: CRIService, req: api_pb2.ListMetricDescriptorsRequest
) -> api_pb2.ListMetricDescriptorsResponse:
    return api_pb2.ListMetricDescriptorsResponse(descriptors=[d.proto() for d in DESCRIPTORS.values()])


class _Out:
    def __init__(self, base: list[str], ts: int) -> None:
        self.base = base
        self.ts = ts
        self.metrics: list[api_pb2.Metric] = []

    def add(self, name: str, value: float, *extra: str) -> None:
        d = DESCRIPTORS[name]
        m = api_pb2.Metric(
            name=name, timestamp=self.ts, metric_type=d.kind, label_values=[*self.base, *extra]
        )
        m.value.value = max(0, int(value))
        self.metrics.append(m)


def _spec_resources(container: Container) -> dict[str, dict[str, int]]:
    spec = container.spec or {}
    res: dict[str, dict[str, int]] = (spec.get("linux") or {}).get("resources") or {}
    return res


def _statvfs(path: str) -> tuple[int, int, int]:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0, 0, 0
    return st.f_blocks * st.f_frsize, st.f_files, st.f_ffree


async def container_metrics(c: CRIService, sb: Sandbox, container: Container) -> api_pb2.ContainerMetrics:
    md = sb.config.metadata
    ts = time.time_ns()
    base = [md.name, md.namespace, container.config.metadata.name, container.id, container.metadata.image_ref]
    out = _Out(base, ts)
    s = await sample(container.task) or Sample(ts)
    st = container.status.get()
    out.add("container_cpu_user_seconds_total", s.cpu_user / 1e9)
    out.add("container_cpu_system_seconds_total", s.cpu_kernel / 1e9)
    out.add("container_cpu_usage_seconds_total", s.cpu_total / 1e9)
    out.add("container_cpu_cfs_periods_total", s.throttle_periods)
    out.add("container_cpu_cfs_throttled_periods_total", s.throttled_periods)
    out.add("container_cpu_cfs_throttled_seconds_total", s.throttled_time / 1e9)
    out.add("container_memory_cache", s.cache)
    out.add("container_memory_rss", s.rss)
    out.add("container_memory_kernel_usage", s.kernel)
    out.add("container_memory_mapped_file", s.mapped_file)
    out.add("container_memory_swap", s.swap)
    out.add("container_memory_failcnt", s.memory_failcnt)
    out.add("container_memory_usage_bytes", s.memory_usage)
    out.add("container_memory_max_usage_bytes", s.memory_max_usage)
    out.add("container_memory_working_set_bytes", s.working_set)
    out.add("container_memory_total_active_file_bytes", s.active_file)
    out.add("container_memory_total_inactive_file_bytes", s.inactive_file)
    minor = max(0, s.page_faults - s.major_page_faults)
    out.add("container_memory_failures_total", minor, "pgfault", "container")
    out.add("container_memory_failures_total", s.major_page_faults, "pgmajfault", "container")
    out.add("container_oom_events_total", s.oom_kills)
    # Filesystem of the writable layer.
    sn = c.snapshotter_for(container.metadata.runtime_handler)
    root = str(c.daemon_root / f"io.containerd.snapshotter.v1.{sn}")
    _, used, _ = await layer_usage(c, container.id, sn)
    total, inodes, ifree = await asyncio.to_thread(_statvfs, root)
    out.add("container_fs_inodes_free", ifree, root)
    out.add("container_fs_inodes_total", inodes, root)
    out.add("container_fs_limit_bytes", total, root)
    out.add("container_fs_usage_bytes", used, root)
    # Processes.
    procs = 0
    if container.task is not None:
        try:
            procs = len(await container.task.pids())
        except Exception:
            procs = 0
    fds = sockets = 0
    if st.pid:
        fds, sockets = await asyncio.to_thread(fds_of, st.pid)
    out.add("container_processes", procs)
    out.add("container_file_descriptors", fds)
    out.add("container_sockets", sockets)
    out.add("container_threads_max", s.pids_limit)
    out.add("container_threads", s.pids)
    out.add("container_last_seen", ts / 1e9)
    out.add("container_start_time_seconds", st.started_at / 1e9)
    res = _spec_resources(container)
    cpu = res.get("cpu") or {}
    mem = res.get("memory") or {}
    out.add("container_spec_cpu_period", cpu.get("period", 0))
    out.add("container_spec_cpu_shares", cpu.get("shares", 0))
    out.add("container_spec_memory_limit_bytes", mem.get("limit", 0))
    out.add("container_spec_memory_reservation_limit_bytes", mem.get("reservation", 0))
    out.add("container_spec_memory_swap_limit_bytes", mem.get("swap", 0))
    return api_pb2.ContainerMetrics(container_id=container.id, metrics=out.metrics)


async def pod_metrics(c: CRIService, sb: Sandbox) -> api_pb2.PodSandboxMetrics:
    md = sb.config.metadata
    ts = time.time_ns()
    out = _Out([md.name, md.namespace, "", sb.id, ""], ts)
    if sb.pid:
        for d in await asyncio.to_thread(read_net_dev, sb.pid):
            if d.name == "lo":
                continue
            out.add("container_network_receive_bytes_total", d.rx_bytes, d.name)
            out.add("container_network_receive_packets_total", d.rx_packets, d.name)
            out.add("container_network_receive_packets_dropped_total", d.rx_dropped, d.name)
            out.add("container_network_receive_errors_total", d.rx_errors, d.name)
            out.add("container_network_transmit_bytes_total", d.tx_bytes, d.name)
            out.add("container_network_transmit_packets_total", d.tx_packets, d.name)
            out.add("container_network_transmit_packets_dropped_total", d.tx_dropped, d.name)
            out.add("container_network_transmit_errors_total", d.tx_errors, d.name)
    containers = [x for x in c.containers.by_sandbox(sb.id) if x.status.get().created_at]
    cms = await asyncio.gather(*(container_metrics(c, sb, x) for x in containers))
    return api_pb2.PodSandboxMetrics(pod_sandbox_id=sb.id, metrics=out.metrics, container_metrics=list(cms))


async def list_pod_sandbox_metrics(
    c: CRIService, req: api_pb2.ListPodSandboxMetricsRequest
) -> api_pb2.ListPodSandboxMetricsResponse:
    pods = [sb for sb in c.sandboxes.list() if sb.state == SandboxState.READY]
    results = await asyncio.gather(*(pod_metrics(c, sb) for sb in pods), return_exceptions=True)
    return api_pb2.ListPodSandboxMetricsResponse(
        pod_metrics=[r for r in results if isinstance(r, api_pb2.PodSandboxMetrics)]
    )
