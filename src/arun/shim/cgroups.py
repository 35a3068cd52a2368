"""A container's cgroup: where it is, what it has used, and when it ran out of memory.

The cgroup is found from the init process (``/proc/<pid>/cgroup`` against the cgroup mounts in
``/proc/self/mountinfo``), right after ``runc create``, while that process is certain to be in it.
Statistics are read straight from the cgroup files into containerd's metrics messages,
``io.containerd.cgroups.v1.Metrics`` and ``io.containerd.cgroups.v2.Metrics`` (the files and
field mapping are those of containerd/cgroups ``Stat``; a missing controller or file is skipped,
like its ``IgnoreNotExist``).

OOM: cgroup v1 registers an eventfd for ``memory.oom_control`` through ``cgroup.event_control``;
cgroup v2 watches ``memory.events`` with inotify and reports when ``oom_kill`` grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_UINT64 = (1 << 64) - 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno in (19, 22, 95):  # ENODEV, EINVAL, EOPNOTSUPP: the kernel lacks this file's feature
            return None
        raise


def _uint(text: str | None) -> int:
    if text is None:
        return 0
    text = text.strip()
    if not text or text == "max":
        return 0
    try:
        return max(0, int(text))
    except ValueError:
        return 0


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = int(parts[1])
    return out


@dataclass(frozen=True, slots=True)
class _CgroupMount:
    root: str  # the path inside the hierarchy that is mounted
    mountpoint: str
    fstype: str
    controllers: frozenset[str]


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[_CgroupMount]:
    out: list[_CgroupMount] = []
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
                continue
            opts = frozenset(rfields[2].split(","))
            out.append(_CgroupMount(_unescape(fields[3]), _unescape(fields[4]), rfields[0], opts))
    return out


def _join(mount: _CgroupMount, path: str) -> str:
    if mount.root != "/" and (path == mount.root or path.startswith(mount.root + "/")):
        path = path[len(mount.root) :]
    return os.path.join(mount.mountpoint, path.lstrip("/"))


class CgroupV1:
    """The per-controller directories of a cgroup v1 group."""

    version = 1

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths

    def path(self, controller: str) -> str | None:
        return self.paths.get(controller)

    def exists(self) -> bool:
        d = self.paths.get("memory") or next(iter(self.paths.values()), None)
        return d is not None and os.path.isdir(d)

    def stats(self) -> Any:
        from arun.shim import litepb

        m = litepb.io_containerd_cgroups_v1_Metrics()
        pids = self.paths.get("pids")
        if pids and os.path.isdir(pids):
            m.pids.current = _uint(_read(f"{pids}/pids.current"))
            m.pids.limit = _uint(_read(f"{pids}/pids.max"))
        self._cpu(m)
        self._memory(m)
        self._blkio(m)
        self._hugetlb(m)
        return m

    def _cpu(self, m: Any) -> None:
        acct = self.paths.get("cpuacct")
        if acct and os.path.isdir(acct):
            m.cpu.usage.total = _uint(_read(f"{acct}/cpuacct.usage"))
            stat = _kv(_read(f"{acct}/cpuacct.stat"))
            # USER_HZ ticks → nanoseconds
            m.cpu.usage.user = stat.get("user", 0) * 1_000_000_000 // _CLK_TCK
            m.cpu.usage.kernel = stat.get("system", 0) * 1_000_000_000 // _CLK_TCK
            percpu = _read(f"{acct}/cpuacct.usage_percpu")
            if percpu:
                m.cpu.usage.per_cpu.extend(int(v) for v in percpu.split())
        cpu = self.paths.get("cpu")
        if cpu and os.path.isdir(cpu):
            stat = _kv(_read(f"{cpu}/cpu.stat"))
            m.cpu.throttling.periods = stat.get("nr_periods", 0)
            m.cpu.throttling.throttled_periods = stat.get("nr_throttled", 0)
            m.cpu.throttling.throttled_time = stat.get("throttled_time", 0)

    _MEMORY_STAT = {
        "cache": "cache",
        "rss": "rss",
        "rss_huge": "rss_huge",
        "mapped_file": "mapped_file",
        "dirty": "dirty",
        "writeback": "writeback",
        "pgpgin": "pg_pg_in",
        "pgpgout": "pg_pg_out",
        "pgfault": "pg_fault",
        "pgmajfault": "pg_maj_fault",
        "inactive_anon": "inactive_anon",
        "active_anon": "active_anon",
        "inactive_file": "inactive_file",
        "active_file": "active_file",
        "unevictable": "unevictable",
        "hierarchical_memory_limit": "hierarchical_memory_limit",
        "hierarchical_memsw_limit": "hierarchical_swap_limit",
        "total_cache": "total_cache",
        "total_rss": "total_rss",
        "total_rss_huge": "total_rss_huge",
        "total_mapped_file": "total_mapped_file",
        "total_dirty": "total_dirty",
        "total_writeback": "total_writeback",
        "total_pgpgin": "total_pg_pg_in",
        "total_pgpgout": "total_pg_pg_out",
        "total_pgfault": "total_pg_fault",
        "total_pgmajfault": "total_pg_maj_fault",
        "total_inactive_anon": "total_inactive_anon",
        "total_active_anon": "total_active_anon",
        "total_inactive_file": "total_inactive_file",
        "total_active_file": "total_active_file",
        "total_unevictable": "total_unevictable",
    }

    def _memory(self, m: Any) -> None:
        mem = self.paths.get("memory")
        if not mem or not os.path.isdir(mem):
            return
        raw = _kv(_read(f"{mem}/memory.stat"))
        for key, name in self._MEMORY_STAT.items():
            setattr(m.memory, name, raw.get(key, 0))
        for module, entry in (
            ("", m.memory.usage),
            ("memsw.", m.memory.swap),
            ("kmem.", m.memory.kernel),
            ("kmem.tcp.", m.memory.kernel_tcp),
        ):
            entry.usage = _uint(_read(f"{mem}/memory.{module}usage_in_bytes"))
            entry.max = _uint(_read(f"{mem}/memory.{module}max_usage_in_bytes"))
            entry.failcnt = _uint(_read(f"{mem}/memory.{module}failcnt"))
            entry.limit = _uint(_read(f"{mem}/memory.{module}limit_in_bytes"))
        oom = _kv(_read(f"{mem}/memory.oom_control"))
        m.memory_oom_control.oom_kill_disable = oom.get("oom_kill_disable", 0)
        m.memory_oom_control.under_oom = oom.get("under_oom", 0)
        m.memory_oom_control.oom_kill = oom.get("oom_kill", 0)

    def _blkio(self, m: Any) -> None:
        blkio = self.paths.get("blkio")
        if not blkio or not os.path.isdir(blkio):
            return
        m.blkio.SetInParent()  # present even with no I/O yet, as containerd's shims report it
        devices = _block_devices()
        cfq = [
            ("sectors_recursive", m.blkio.sectors_recursive),
            ("io_service_bytes_recursive", m.blkio.io_service_bytes_recursive),
            ("io_serviced_recursive", m.blkio.io_serviced_recursive),
            ("io_queued_recursive", m.blkio.io_queued_recursive),
            ("io_service_time_recursive", m.blkio.io_service_time_recursive),
            ("io_wait_time_recursive", m.blkio.io_wait_time_recursive),
            ("io_merged_recursive", m.blkio.io_merged_recursive),
            ("time_recursive", m.blkio.io_time_recursive),
        ]
        size = 0
        if os.path.exists(f"{blkio}/blkio.io_serviced_recursive"):
            for name, entries in cfq:
                size += _blkio_entries(f"{blkio}/blkio.{name}", devices, entries)
        if size == 0:
            _blkio_entries(f"{blkio}/blkio.throttle.io_serviced", devices, m.blkio.io_serviced_recursive)
            _blkio_entries(
                f"{blkio}/blkio.throttle.io_service_bytes", devices, m.blkio.io_service_bytes_recursive
            )

    def _hugetlb(self, m: Any) -> None:
        hugetlb = self.paths.get("hugetlb")
        if not hugetlb or not os.path.isdir(hugetlb):
            return
        sizes = sorted(
            {n.split(".")[1] for n in os.listdir(hugetlb) if n.startswith("hugetlb.") and n.count(".") >= 2}
        )
        for size in sizes:
            s = m.hugetlb.add(pagesize=size)
            s.usage = _uint(_read(f"{hugetlb}/hugetlb.{size}.usage_in_bytes"))
            s.max = _uint(_read(f"{hugetlb}/hugetlb.{size}.max_usage_in_bytes"))
            s.failcnt = _uint(_read(f"{hugetlb}/hugetlb.{size}.failcnt"))


def _block_devices() -> dict[tuple[int, int], str]:
    out: dict[tuple[int, int], str] = {}
    for line in (_read("/proc/partitions") or "").splitlines()[2:]:
        parts = line.split()
        if len(parts) == 4:
            with contextlib.suppress(ValueError):
                out[(int(parts[0]), int(parts[1]))] = "/dev/" + parts[3]
    return out


def _blkio_entries(path: str, devices: dict[tuple[int, int], str], entries: Any) -> int:
    n = 0
    for line in (_read(path) or "").splitlines():
        fields = line.replace(":", " ").split()
        if len(fields) < 3:
            continue  # the "Total N" line
        try:
            major, minor = int(fields[0]), int(fields[1])
            op, value = (fields[2], int(fields[3])) if len(fields) >= 4 else ("", int(fields[2]))
        except ValueError:
            continue
        entries.add(op=op, device=devices.get((major, minor), ""), major=major, minor=minor, value=value)
        n += 1
    return n


class CgroupV2:
    """A cgroup of the unified hierarchy."""

    version = 2

    def __init__(self, path: str) -> None:
        self.dir = path

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def stats(self) -> Any:
        from arun.shim import litepb

        d = self.dir
        m = litepb.io_containerd_cgroups_v2_Metrics()
        m.pids.current = _uint(_read(f"{d}/pids.current"))
        m.pids.limit = _uint(_read(f"{d}/pids.max"))
        cpu = _kv(_read(f"{d}/cpu.stat"))
        for name in (
            "usage_usec",
            "user_usec",
            "system_usec",
            "nr_periods",
            "nr_throttled",
            "throttled_usec",
            "nr_bursts",
            "burst_usec",
        ):
            setattr(m.cpu, name, cpu.get(name, 0))
        _psi(_read(f"{d}/cpu.pressure"), m.cpu.psi)
        mem = _kv(_read(f"{d}/memory.stat"))
        for field in m.memory.FIELDS:
            if field.name in mem and field.kind == "uint64":
                setattr(m.memory, field.name, mem[field.name])
        m.memory.usage = _uint(_read(f"{d}/memory.current"))
        m.memory.usage_limit = _limit(_read(f"{d}/memory.max"))
        m.memory.swap_usage = _uint(_read(f"{d}/memory.swap.current"))
        m.memory.swap_limit = _limit(_read(f"{d}/memory.swap.max"))
        m.memory.max_usage = _uint(_read(f"{d}/memory.peak"))
        m.memory.swap_max_usage = _uint(_read(f"{d}/memory.swap.peak"))
        _psi(_read(f"{d}/memory.pressure"), m.memory.psi)
        events = _kv(_read(f"{d}/memory.events"))
        for name in ("low", "high", "max", "oom", "oom_kill", "oom_group_kill"):
            setattr(m.memory_events, name, events.get(name, 0))
        for line in (_read(f"{d}/io.stat") or "").splitlines():
            parts = line.split()
            if not parts or ":" not in parts[0]:
                continue
            major, _, minor = parts[0].partition(":")
            entry = m.io.usage.add(major=int(major), minor=int(minor))
            for kv in parts[1:]:
                key, _, value = kv.partition("=")
                if key in ("rbytes", "wbytes", "rios", "wios"):
                    setattr(entry, key, int(value))
        _psi(_read(f"{d}/io.pressure"), m.io.psi)
        sizes = sorted(
            {n.split(".")[1] for n in _listdir(d) if n.startswith("hugetlb.") and n.endswith(".current")}
        )
        for size in sizes:
            h = m.hugetlb.add(pagesize=size)
            h.current = _uint(_read(f"{d}/hugetlb.{size}.current"))
            h.max = _limit(_read(f"{d}/hugetlb.{size}.max"))
        return m


def _listdir(d: str) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []


def _limit(text: str | None) -> int:
    if text is not None and text.strip() == "max":
        return MAX_UINT64
    return _uint(text)


def _psi(text: str | None, psi: Any) -> None:
    for line in (text or "").splitlines():
        kind, *pairs = line.split()
        if kind not in ("some", "full"):
            continue
        data = getattr(psi, kind)
        for pair in pairs:
            key, _, value = pair.partition("=")
            with contextlib.suppress(ValueError):
                if key == "total":
                    data.total = int(value)
                elif key in ("avg10", "avg60", "avg300"):
                    setattr(data, key, float(value))


Cgroup = CgroupV1 | CgroupV2


def load(pid: int, *, proc: str = "/proc", mountinfo: str = "/proc/self/mountinfo") -> Cgroup | None:
    """The cgroup of ``pid``: v1 if it is in any v1 hierarchy with controllers, else v2."""
    text = _read(f"{proc}/{pid}/cgroup")
    if text is None:
        return None
    mounts = cgroup_mounts(mountinfo)
    v1: dict[str, str] = {}
    v2_path: str | None = None
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            v2_path = path
            continue
        for controller in controllers.split(","):
            if not controller or controller.startswith("name="):
                continue
            for mount in mounts:
                if mount.fstype == "cgroup" and controller in mount.controllers:
                    v1[controller] = _join(mount, path)
                    break
    if v1:
        return CgroupV1(v1)
    if v2_path is not None:
        for mount in mounts:
            if mount.fstype == "cgroup2":
                directory = _join(mount, v2_path)
                # On a hybrid host the unified mount may hold nothing of ours.
                if os.path.isdir(directory) and os.path.exists(os.path.join(directory, "cgroup.procs")):
                    return CgroupV2(directory)
    return None


# -- OOM -------------------------------------------------------------------------------------------


class OOMWatcher:
    """Calls ``on_oom(container_id)`` when a watched cgroup records an OOM kill."""

    def __init__(self, on_oom: Callable[[str], None]) -> None:
        self._on_oom = on_oom
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watches: dict[str, _Watch] = {}

    def add(self, container_id: str, cgroup: Cgroup) -> None:
        self.remove(container_id)
        loop = self._loop = self._loop or asyncio.get_running_loop()
        watch: _Watch
        if isinstance(cgroup, CgroupV1):
            memory = cgroup.path("memory")
            if memory is None:
                return
            watch = _EventfdWatch(container_id, memory)
        else:
            watch = _InotifyWatch(container_id, cgroup.dir)
        self._watches[container_id] = watch
        loop.add_reader(watch.fd, self._ready, container_id)

    def _ready(self, container_id: str) -> None:
        watch = self._watches.get(container_id)
        if watch is None:
            return
        verdict = watch.read()
        if verdict is None:  # the cgroup is gone
            self.remove(container_id)
        elif verdict:
            self._on_oom(container_id)

    def remove(self, container_id: str) -> None:
        watch = self._watches.pop(container_id, None)
        if watch is not None:
            if self._loop is not None:
                self._loop.remove_reader(watch.fd)
            watch.close()

    def close(self) -> None:
        for cid in list(self._watches):
            self.remove(cid)

    def __contains__(self, container_id: str) -> bool:
        return container_id in self._watches


class _Watch:
    fd: int

    def read(self) -> bool | None:
        """True: an OOM happened; False: spurious; None: the cgroup is gone."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _EventfdWatch(_Watch):
    def __init__(self, container_id: str, memory_dir: str) -> None:
        self.memory_dir = memory_dir
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            self._control = os.open(f"{memory_dir}/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                with open(f"{memory_dir}/cgroup.event_control", "w") as f:
                    f.write(f"{self.fd} {self._control}")
            except BaseException:
                os.close(self._control)
                raise
        except BaseException:
            os.close(self.fd)
            raise

    def read(self) -> bool | None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            return False
        # The eventfd also fires when the cgroup is removed.
        return True if os.path.exists(f"{self.memory_dir}/memory.oom_control") else None

    def close(self) -> None:
        os.close(self._control)
        os.close(self.fd)


_IN_MODIFY = 0x2
_IN_IGNORED = 0x8000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")


class _InotifyWatch(_Watch):
    def __init__(self, container_id: str, directory: str) -> None:
        self.path = f"{directory}/memory.events"
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        if libc.inotify_add_watch(self.fd, self.path.encode(), _IN_MODIFY) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"inotify {self.path}: {os.strerror(err)}")
        self._last = _kv(_read(self.path)).get("oom_kill", 0)

    def read(self) -> bool | None:
        gone = False
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            off = 0
            while off + _EVENT.size <= len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, off)
                if mask & _IN_IGNORED:
                    gone = True
                off += _EVENT.size + length
        text = _read(self.path)
        if text is None:
            return None
        count = _kv(text).get("oom_kill", 0)
        grew, self._last = count > self._last, count
        if gone and not grew:
            return None
        return grew

    def close(self) -> None:
        os.close(self.fd)
