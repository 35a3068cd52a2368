"""Cgroup discovery, statistics and the v2 OOM watch against fake cgroup trees in a temp dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

from arun.shim import cgroups


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_proc(tmp: Path, cgroup_lines: str, mountinfo: str) -> tuple[str, str]:
    write(tmp / "proc" / "42" / "cgroup", cgroup_lines)
    write(tmp / "mountinfo", mountinfo)
    return str(tmp / "proc"), str(tmp / "mountinfo")


def test_load_v1_maps_each_controller_to_its_mount(tmp_path: Path) -> None:
    fs = tmp_path / "fs"
    mountinfo = "\n".join(
        [
            f"32 31 0:29 / {fs}/cpu rw,relatime - cgroup cgroup rw,cpu",
            f"33 31 0:30 / {fs}/cpuacct rw,relatime - cgroup cgroup rw,cpuacct",
            f"35 31 0:32 / {fs}/memory rw,relatime - cgroup cgroup rw,memory",
            f"39 31 0:36 /nested {fs}/pids rw,relatime - cgroup cgroup rw,pids",
            f"40 31 0:37 / {fs}/systemd rw,relatime - cgroup cgroup rw,name=systemd",
            f"41 31 0:38 / {fs}/unified rw,relatime - cgroup2 cgroup2 rw",
        ]
    )
    lines = "9:name=systemd:/\n8:pids:/nested/ns/c1\n4:memory:/ns/c1\n2:cpuacct:/ns/c1\n1:cpu:/ns/c1\n0::/\n"
    proc, mi = fake_proc(tmp_path, lines, mountinfo)
    cg = cgroups.load(42, proc=proc, mountinfo=mi)
    assert isinstance(cg, cgroups.CgroupV1)
    assert cg.paths == {
        "pids": f"{fs}/pids/ns/c1",
        "memory": f"{fs}/memory/ns/c1",
        "cpuacct": f"{fs}/cpuacct/ns/c1",
        "cpu": f"{fs}/cpu/ns/c1",
    }


def test_v1_stats_read_the_files(tmp_path: Path) -> None:
    mem, acct, cpu, pids = (tmp_path / n for n in ("memory", "cpuacct", "cpu", "pids"))
    write(mem / "memory.stat", "cache 4096\nrss 8192\ntotal_rss 8192\nhierarchical_memsw_limit 77\n")
    write(mem / "memory.usage_in_bytes", "12288\n")
    write(mem / "memory.max_usage_in_bytes", "20000\n")
    write(mem / "memory.limit_in_bytes", "16777216\n")
    write(mem / "memory.failcnt", "3\n")
    write(mem / "memory.memsw.usage_in_bytes", "13000\n")
    write(mem / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    write(acct / "cpuacct.usage", "123456789\n")
    write(acct / "cpuacct.usage_percpu", "100 200 \n")
    write(acct / "cpuacct.stat", "user 10\nsystem 5\n")
    write(cpu / "cpu.stat", "nr_periods 7\nnr_throttled 1\nthrottled_time 99\n")
    write(pids / "pids.current", "4\n")
    write(pids / "pids.max", "max\n")
    cg = cgroups.CgroupV1({"memory": str(mem), "cpuacct": str(acct), "cpu": str(cpu), "pids": str(pids)})
    m = cg.stats()
    assert m.FULL_NAME == "io.containerd.cgroups.v1.Metrics"
    assert (m.memory.cache, m.memory.rss, m.memory.total_rss) == (4096, 8192, 8192)
    assert m.memory.hierarchical_swap_limit == 77
    assert (m.memory.usage.usage, m.memory.usage.max, m.memory.usage.limit, m.memory.usage.failcnt) == (
        12288,
        20000,
        16777216,
        3,
    )
    assert m.memory.swap.usage == 13000 and m.memory.kernel.usage == 0  # missing files: zero
    assert m.memory_oom_control.oom_kill == 2
    assert m.cpu.usage.total == 123456789 and list(m.cpu.usage.per_cpu) == [100, 200]
    assert m.cpu.usage.user > 0 and m.cpu.usage.kernel > 0
    assert (m.cpu.throttling.periods, m.cpu.throttling.throttled_periods) == (7, 1)
    assert (m.pids.current, m.pids.limit) == (4, 0)
    assert cg.exists()


def test_load_v2_and_stats(tmp_path: Path) -> None:
    fs = tmp_path / "unified"
    d = fs / "pod" / "c1"
    write(d / "cgroup.procs", "42\n")
    write(d / "pids.current", "3\n")
    write(d / "pids.max", "100\n")
    write(d / "cpu.stat", "usage_usec 500\nuser_usec 300\nsystem_usec 200\nnr_periods 0\n")
    write(d / "cpu.pressure", "some avg10=1.50 avg60=0.00 avg300=0.00 total=1234\n")
    write(d / "memory.stat", "anon 1000\nfile 2000\npgfault 5\n")
    write(d / "memory.current", "3000\n")
    write(d / "memory.max", "max\n")
    write(d / "memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    write(d / "io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n")
    proc, mi = fake_proc(tmp_path, "0::/pod/c1\n", f"41 31 0:38 / {fs} rw - cgroup2 cgroup2 rw\n")
    cg = cgroups.load(42, proc=proc, mountinfo=mi)
    assert isinstance(cg, cgroups.CgroupV2) and cg.dir == str(d)
    m = cg.stats()
    assert m.FULL_NAME == "io.containerd.cgroups.v2.Metrics"
    assert (m.pids.current, m.pids.limit) == (3, 100)
    assert (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec) == (500, 300, 200)
    assert m.cpu.psi.some.avg10 == 1.5 and m.cpu.psi.some.total == 1234
    assert (m.memory.anon, m.memory.file, m.memory.pgfault, m.memory.usage) == (1000, 2000, 5, 3000)
    assert m.memory.usage_limit == cgroups.MAX_UINT64
    assert (m.memory_events.max, m.memory_events.oom_kill) == (4, 1)
    assert [(e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios) for e in m.io.usage] == [
        (8, 0, 10, 20, 1, 2)
    ]


def test_load_missing_process(tmp_path: Path) -> None:
    assert cgroups.load(999999, proc=str(tmp_path)) is None


async def test_v2_oom_watch_reports_growth_of_oom_kill(tmp_path: Path) -> None:
    d = tmp_path / "c1"
    write(d / "memory.events", "oom 0\noom_kill 0\n")
    seen: list[str] = []
    watcher = cgroups.OOMWatcher(seen.append)
    watcher.add("c1", cgroups.CgroupV2(str(d)))
    try:
        write(d / "memory.events", "oom 0\noom_kill 0\nhigh 1\n")  # a change, but no kill
        await asyncio.sleep(0.1)
        assert seen == []
        write(d / "memory.events", "oom 1\noom_kill 1\n")
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == ["c1"]
        assert "c1" in watcher
    finally:
        watcher.close()
    assert "c1" not in watcher


def test_v1_blkio_is_reported_without_any_io(tmp_path: Path) -> None:
    # containerd's shims send an (empty) blkio section for a container that did no I/O yet.
    blkio = tmp_path / "blkio"
    write(blkio / "blkio.throttle.io_serviced", "Total 0\n")
    write(blkio / "blkio.throttle.io_service_bytes", "Total 0\n")
    m = cgroups.CgroupV1({"blkio": str(blkio)}).stats()
    assert m.HasField("blkio") and not m.HasField("memory")
    write(blkio / "blkio.throttle.io_serviced", "8:0 Read 3\n8:0 Write 4\nTotal 7\n")
    m = cgroups.CgroupV1({"blkio": str(blkio)}).stats()
    assert sorted((e.op, e.major, e.value) for e in m.blkio.io_serviced_recursive) == [
        ("Read", 8, 3),
        ("Write", 8, 4),
    ]
