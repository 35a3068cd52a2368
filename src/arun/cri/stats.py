"""ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats: CPU and memory from
the containers' cgroups (through their shims' Stats), the writable layer's usage from the
snapshotter, network counters from the pod's network namespace.

CPU usage in nano-cores is the rate between two samples, so the last sample of every
container is kept (as containerd does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from arun.api.cgroups.v1 import metrics_pb2 as cg1
from arun.api.cgroups.v2 import metrics_pb2 as cg2
from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.store.container import Container
from arun.cri.store.sandbox import Sandbox, SandboxState
from arun.cri.util import match_labels
from arun.errdefs import FailedPreconditionError

log = logging.getLogger(__name__)

# How long a writable layer's usage is reused before it is measured again.
USAGE_TTL = 10.0


@dataclass
class Sample:
    """One cgroup reading, reduced to what CRI reports."""

    timestamp: int
    cpu_total: int = 0
    cpu_user: int = 0
    cpu_kernel: int = 0
    throttle_periods: int = 0
    throttled_periods: int = 0
    throttled_time: int = 0
    memory_usage: int = 0
    memory_max_usage: int = 0
    memory_limit: int = 0
    memory_failcnt: int = 0
    working_set: int = 0
    rss: int = 0
    cache: int = 0
    mapped_file: int = 0
    kernel: int = 0
    swap: int = 0
    page_faults: int = 0
    major_page_faults: int = 0
    active_file: int = 0
    inactive_file: int = 0
    oom_kills: int = 0
    pids: int = 0
    pids_limit: int = 0


def decode_metrics(anyv: Any) -> Sample:
    now = time.time_ns()
    s = Sample(timestamp=now)
    url = anyv.type_url
    if url.endswith("cgroups.v1.Metrics"):
        m = cg1.Metrics.FromString(anyv.value)
        s.cpu_total = m.cpu.usage.total
        s.cpu_user = m.cpu.usage.user
        s.cpu_kernel = m.cpu.usage.kernel
        s.throttle_periods = m.cpu.throttling.periods
        s.throttled_periods = m.cpu.throttling.throttled_periods
        s.throttled_time = m.cpu.throttling.throttled_time
        mem = m.memory
        s.memory_usage = mem.usage.usage
        s.memory_max_usage = mem.usage.max
        s.memory_limit = mem.usage.limit
        s.memory_failcnt = mem.usage.failcnt
        inactive = mem.total_inactive_file or mem.inactive_file
        s.working_set = max(0, mem.usage.usage - inactive)
        s.rss = mem.total_rss or mem.rss
        s.cache = mem.total_cache or mem.cache
        s.mapped_file = mem.total_mapped_file or mem.mapped_file
        s.kernel = mem.kernel.usage
        s.swap = max(0, mem.swap.usage - mem.usage.usage) if mem.swap.usage else 0
        s.page_faults = mem.total_pg_fault or mem.pg_fault
        s.major_page_faults = mem.total_pg_maj_fault or mem.pg_maj_fault
        s.active_file = mem.total_active_file or mem.active_file
        s.inactive_file = inactive
        s.oom_kills = m.memory_oom_control.oom_kill
        s.pids = m.pids.current
        s.pids_limit = m.pids.limit
    elif url.endswith("cgroups.v2.Metrics"):
        m2 = cg2.Metrics.FromString(anyv.value)
        s.cpu_total = m2.cpu.usage_usec * 1000
        s.cpu_user = m2.cpu.user_usec * 1000
        s.cpu_kernel = m2.cpu.system_usec * 1000
        s.throttle_periods = m2.cpu.nr_periods
        s.throttled_periods = m2.cpu.nr_throttled
        s.throttled_time = m2.cpu.throttled_usec * 1000
        mem2 = m2.memory
        s.memory_usage = mem2.usage
        s.memory_max_usage = getattr(mem2, "max_usage", 0)
        s.memory_limit = mem2.usage_limit
        s.working_set = max(0, mem2.usage - mem2.inactive_file)
        s.rss = mem2.anon
        s.cache = mem2.file
        s.mapped_file = mem2.file_mapped
        s.kernel = mem2.kernel_stack + mem2.slab
        s.swap = mem2.swap_usage
        s.page_faults = mem2.pgfault
        s.major_page_faults = mem2.pgmajfault
        s.active_file = mem2.active_file
        s.inactive_file = mem2.inactive_file
        s.oom_kills = m2.memory_events.oom_kill
        s.pids = m2.pids.current
        s.pids_limit = m2.pids.limit
    return s


class StatsCache:
    """Last samples (for CPU rates) and writable-layer usage (measured at most every USAGE_TTL)."""

    def __init__(self) -> None:
        self.last: dict[str, Sample] = {}
        self.usage: dict[str, tuple[float, int, int]] = {}

    def nano_cores(self, id: str, s: Sample) -> int:
        prev = self.last.get(id)
        self.last[id] = s
        if prev is None or s.timestamp <= prev.timestamp or s.cpu_total < prev.cpu_total:
            return 0
        return int((s.cpu_total - prev.cpu_total) * 1e9 / (s.timestamp - prev.timestamp))

    def forget(self, id: str) -> None:
        self.last.pop(id, None)
        self.usage.pop(id, None)


_cache: dict[int, StatsCache] = {}


def cache_of(c: CRIService) -> StatsCache:
    got = _cache.get(id(c))
    if got is None:
        got = _cache[id(c)] = StatsCache()
    return got


async def sample(task: Any) -> Sample | None:
    if task is None:
        return None
    try:
        return decode_metrics(await task.stats())
    except Exception as e:
        log.debug("stats of task failed: %s", e)
        return None


async def layer_usage(c: CRIService, container_id: str, snapshotter: str) -> tuple[int, int, int]:
    """(timestamp, bytes, inodes) of a container's writable layer."""
    cache = cache_of(c)
    hit = cache.usage.get(container_id)
    now = time.monotonic()
    if hit is not None and now - hit[0] < USAGE_TTL:
        return time.time_ns(), hit[1], hit[2]
    used = inodes = 0
    try:
        u = await c.meta.snapshotter(snapshotter).usage(container_id)
        used, inodes = int(u.size), int(u.inodes)
    except Exception as e:
        log.debug("usage of snapshot %s: %s", container_id, e)
    cache.usage[container_id] = (now, used, inodes)
    return time.time_ns(), used, inodes


def _attributes(container: Container) -> api_pb2.ContainerAttributes:
    cfg = container.config
    a = api_pb2.ContainerAttributes(id=container.id)
    a.metadata.CopyFrom(cfg.metadata)
    a.labels.update(cfg.labels)
    a.annotations.update(cfg.annotations)
    return a


async def container_stats_of(c: CRIService, container: Container) -> api_pb2.ContainerStats:
    out = api_pb2.ContainerStats(attributes=_attributes(container))
    s = await sample(container.task)
    if s is not None:
        out.cpu.timestamp = s.timestamp
        out.cpu.usage_core_nano_seconds.value = s.cpu_total
        out.cpu.usage_nano_cores.value = cache_of(c).nano_cores(container.id, s)
        out.memory.timestamp = s.timestamp
        out.memory.working_set_bytes.value = s.working_set
        out.memory.usage_bytes.value = s.memory_usage
        out.memory.rss_bytes.value = s.rss
        out.memory.page_faults.value = s.page_faults
        out.memory.major_page_faults.value = s.major_page_faults
        if 0 < s.memory_limit < (1 << 62):
            out.memory.available_bytes.value = max(0, s.memory_limit - s.working_set)
        out.swap.timestamp = s.timestamp
        out.swap.swap_usage_bytes.value = s.swap
    sn = c.snapshotter_for(container.metadata.runtime_handler)
    ts, used, inodes = await layer_usage(c, container.id, sn)
    out.writable_layer.timestamp = ts
    out.writable_layer.fs_id.mountpoint = str(c.daemon_root / f"io.containerd.snapshotter.v1.{sn}")
    out.writable_layer.used_bytes.value = used
    out.writable_layer.inodes_used.value = inodes
    return out


async def container_stats(
    c: CRIService, req: api_pb2.ContainerStatsRequest
) -> api_pb2.ContainerStatsResponse:
    container = c.containers.get(req.container_id)
    return api_pb2.ContainerStatsResponse(stats=await container_stats_of(c, container))


def _selected(c: CRIService, f: api_pb2.ContainerStatsFilter | None) -> list[Container]:
    items = c.containers.list()
    if f is not None and f.id:
        one = c.containers.find(f.id)
        items = [one] if one is not None else []
    if f is not None and f.pod_sandbox_id:
        sb = c.sandboxes.find(f.pod_sandbox_id)
        sid = sb.id if sb is not None else f.pod_sandbox_id
        items = [x for x in items if x.sandbox_id == sid]
    if f is not None and f.label_selector:
        items = [x for x in items if match_labels(f.label_selector, x.config.labels)]
    return [x for x in items if x.status.get().created_at and not x.status.get().removing]


async def list_container_stats(
    c: CRIService, req: api_pb2.ListContainerStatsRequest
) -> api_pb2.ListContainerStatsResponse:
    f = req.filter if req.HasField("filter") else None
    items = _selected(c, f)
    stats = await asyncio.gather(*(container_stats_of(c, x) for x in items))
    return api_pb2.ListContainerStatsResponse(stats=list(stats))


# --- pods ---------------------------------------------------------------------------------------


@dataclass
class NetDev:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def read_net_dev(pid: int) -> list[NetDev]:
    """Interface counters of the network namespace of process ``pid`` (``/proc/<pid>/net/dev``)."""
    out: list[NetDev] = []
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        v = rest.split()
        if len(v) < 16:
            continue
        n = [int(x) for x in v]
        out.append(NetDev(name.strip(), n[0], n[1], n[2], n[3], n[8], n[9], n[10], n[11]))
    return out


async def pod_stats_of(c: CRIService, sb: Sandbox) -> api_pb2.PodSandboxStats:
    out = api_pb2.PodSandboxStats()
    a = out.attributes
    a.id = sb.id
    a.metadata.CopyFrom(sb.config.metadata)
    a.labels.update(sb.config.labels)
    a.annotations.update(sb.config.annotations)
    containers = [
        x for x in c.containers.by_sandbox(sb.id) if x.status.get().state() == api_pb2.CONTAINER_RUNNING
    ]
    stats = await asyncio.gather(*(container_stats_of(c, x) for x in containers))
    linux = out.linux
    linux.containers.extend(stats)
    pause = await sample(sb.task) if sb.state == SandboxState.READY else None
    now = time.time_ns()
    cpu_total = (pause.cpu_total if pause else 0) + sum(s.cpu.usage_core_nano_seconds.value for s in stats)
    nano = (cache_of(c).nano_cores(sb.id, Sample(now, cpu_total=cpu_total))) if stats or pause else 0
    linux.cpu.timestamp = now
    linux.cpu.usage_core_nano_seconds.value = cpu_total
    linux.cpu.usage_nano_cores.value = nano
    linux.memory.timestamp = now
    linux.memory.working_set_bytes.value = (pause.working_set if pause else 0) + sum(
        s.memory.working_set_bytes.value for s in stats
    )
    linux.memory.usage_bytes.value = (pause.memory_usage if pause else 0) + sum(
        s.memory.usage_bytes.value for s in stats
    )
    linux.memory.rss_bytes.value = (pause.rss if pause else 0) + sum(s.memory.rss_bytes.value for s in stats)
    linux.process.timestamp = now
    linux.process.process_count.value = (pause.pids if pause else 0) + sum(1 for _ in containers)
    if sb.pid and sb.state == SandboxState.READY:
        devs = await asyncio.to_thread(read_net_dev, sb.pid)
        linux.network.timestamp = now
        for d in devs:
            if d.name == "lo":
                continue
            iface = api_pb2.NetworkInterfaceUsage(name=d.name)
            iface.rx_bytes.value = d.rx_bytes
            iface.rx_errors.value = d.rx_errors
            iface.tx_bytes.value = d.tx_bytes
            iface.tx_errors.value = d.tx_errors
            if d.name == "eth0" or not linux.network.default_interface.name:
                linux.network.default_interface.CopyFrom(iface)
            linux.network.interfaces.append(iface)
    return out


async def pod_sandbox_stats(
    c: CRIService, req: api_pb2.PodSandboxStatsRequest
) -> api_pb2.PodSandboxStatsResponse:
    sb = c.sandboxes.get(req.pod_sandbox_id)
    if sb.state != SandboxState.READY:
        raise FailedPreconditionError(f"sandbox {sb.id!r} is not running")
    return api_pb2.PodSandboxStatsResponse(stats=await pod_stats_of(c, sb))


async def list_pod_sandbox_stats(
    c: CRIService, req: api_pb2.ListPodSandboxStatsRequest
) -> api_pb2.ListPodSandboxStatsResponse:
    f = req.filter if req.HasField("filter") else None
    items = [sb for sb in c.sandboxes.list() if sb.state == SandboxState.READY]
    if f is not None and f.id:
        one = c.sandboxes.find(f.id)
        items = [one] if one is not None and one.state == SandboxState.READY else []
    if f is not None and f.label_selector:
        items = [sb for sb in items if match_labels(f.label_selector, sb.config.labels)]
    stats = await asyncio.gather(*(pod_stats_of(c, sb) for sb in items))
    return api_pb2.ListPodSandboxStatsResponse(stats=list(stats))


def fds_of(pid: int) -> tuple[int, int]:
    """(open file descriptors, sockets) of process ``pid``."""
    fds = sockets = 0
    with contextlib.suppress(OSError):
        for e in os.scandir(f"/proc/{pid}/fd"):
            fds += 1
            with contextlib.suppress(OSError):
                if os.readlink(e.path).startswith("socket:"):
                    sockets += 1
    return fds, sockets
