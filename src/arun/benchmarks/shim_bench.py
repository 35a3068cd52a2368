"""Shims and tasks, side by side with containerd 1.6 on this machine (root, runc, ctr, containerd).

    python -m arun.benchmarks.shim_bench [--runs 20] [--pods 20] [--only start,pss,run]

* **start**: starting a shim through the runtime v2 manager — the zygote, arun's
  ``start`` binary (a fresh Python), and ``containerd-shim-runc-v2 start`` — as the time
  until the address is known (what ``start`` prints) and until the shim answers
  ``Connect`` (what the daemon then waits for). Goal: zygote ≤ 5 ms.
* **pss**: memory per pod — the PSS (``/proc/PID/smaps_rollup``) of the shims of
  ``--pods`` running busybox containers, one pod each, arun's shims (forked from the
  zygote: the zygote and its spares are counted, shared pages split among all of them)
  against ``containerd-shim-runc-v2``; right after the pods started, and once memory has
  settled (the kernel's same-page merging, which arun switches on as its daemon does by
  default, takes a few passes of ``ksmd`` — its CPU time is reported). Goal: ≤ 0.5x the Go shim.
* **run**: ``ctr run -d`` until the task runs, p50 over ``--runs`` runs, against a
  private arun daemon (arun's shim, and the Go shim) and a private containerd 1.6
  (its own root, state and sockets, started here and removed afterwards).
  Goal: arun ≤ 1.0x containerd.

Not a test: nothing is asserted. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from arun import namespaces
from arun.benchmarks.reference import containerd_config, stop
from arun.core.runtime import RUNTIME_ARUN, RUNTIME_RUNC, CreateOpts
from arun.runtime.binary import ShimEnv
from arun.runtime.bundle import Bundle
from arun.runtime.manager import ShimManager, TaskManager, shim_env
from arun.runtime.shim import ShimConnection, ShimGoneError

BUSYBOX = "/bin/busybox"
IMAGE = "docker.io/library/arun-bench:latest"


def p50(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _spares_of(zygote_pid: int, ttrpc_address: str) -> list[int]:
    """The zygote's helpers: its waiting spares, forked from it (its command line,
    not renamed to arun-shim) and with its environment (this daemon's ttrpc address, not
    another's)."""
    out = []
    marker = f"TTRPC_ADDRESS={ttrpc_address}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == zygote_pid:
            continue
        try:
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
            environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"arun.runtime.zygote" in cmd and comm != "arun-shim" and marker in environ:
            out.append(int(entry.name))
    return out


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="arun-bench-", dir="/tmp"))
    try:
        yield d
    finally:
        subprocess.run(["umount", "-R", "-l", str(d)], capture_output=True, check=False)
        shutil.rmtree(d, ignore_errors=True)


def busybox_rootfs(path: Path) -> Path:
    (path / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, path / "bin" / "busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (path / d).mkdir()
    return path


def container_spec(ns: str, id: str, rootfs: Path, *args: str) -> bytes:
    from arun.oci import spec as ocispec

    s = ocispec.build(ns, id, ocispec.with_process_args(*args))
    s["root"] = {"path": str(rootfs), "readonly": True}
    s["linux"]["cgroupsPath"] = f"/{ns}/{id}"
    return json.dumps(s).encode()


def _remove_cgroups(ns: str) -> None:
    """The namespace's cgroup parents and runc state roots, once its containers are gone."""
    for d in Path("/sys/fs/cgroup").glob(f"*/{ns}"):
        for sub in sorted(d.rglob("*"), key=lambda p: len(str(p)), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()
    for root in (Path("/run/arun/runc") / ns, Path("/run/containerd/runc") / ns):
        with contextlib.suppress(OSError):
            root.rmdir()


# -- start ---------------------------------------------------------------------------------------


async def bench_start(runs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with workdir() as base:
        env = shim_env(str(base / "arun.sock"), str(base / "arun.sock.ttrpc"), str(base / "s"))
        for name, runtime, zygote in (
            ("arun zygote", RUNTIME_ARUN, True),
            ("arun start binary", RUNTIME_ARUN, False),
            ("containerd-shim-runc-v2", RUNTIME_RUNC, False),
        ):
            shims = ShimManager(env, use_zygote=zygote)
            shims.start_zygote()
            await shims.wait_zygote()
            shim = shims.resolve(runtime)
            started: list[float] = []
            ready: list[float] = []
            inner: list[float] = []
            ns = "bench-" + uuid.uuid4().hex[:8]
            try:
                for i in range(runs):
                    path = base / "state" / ns / f"s{i}"
                    path.mkdir(parents=True)
                    (path / "config.json").write_text("{}")
                    os.mkfifo(path / "log")
                    log_fd = os.open(path / "log", os.O_RDWR | os.O_NONBLOCK)
                    b = Bundle(f"s{i}", ns, path, base / "root" / ns / f"s{i}")
                    try:
                        t0 = time.perf_counter()
                        result = await shims.start(shim, b, None)
                        t1 = time.perf_counter()
                        conn = await ShimConnection.connect(result, ns, lambda: None)
                        await conn.call("Connect", conn.request("Connect", id=b.id), downgrade=True)
                        t2 = time.perf_counter()
                        started.append((t1 - t0) * 1000)
                        ready.append((t2 - t0) * 1000)
                        if zygote and shims.zygote is not None:
                            inner.append(shims.zygote.last_micros / 1000)
                        with contextlib.suppress(ShimGoneError):  # the Go shim exits before replying
                            await conn.call("Shutdown", conn.request("Shutdown", id=b.id))
                        await conn.close()
                    finally:
                        os.close(log_fd)
                    await asyncio.sleep(0.05)  # let the shim exit before the next one
            finally:
                await shims.close()
            results[name] = {
                "start_p50_ms": round(p50(started), 2),
                "ready_p50_ms": round(p50(ready), 2),
                "start_min_ms": round(min(started), 2),
            }
            if inner:
                results[name]["zygote_inside_p50_ms"] = round(p50(inner), 2)
            if zygote and shims.started["zygote"] != runs:
                results[name]["note"] = f"only {shims.started['zygote']} of {runs} started by the zygote"
    return results


# -- pss -----------------------------------------------------------------------------------------


async def _pods(tm: TaskManager, runtime: str, ns: str, pods: int, rootfs: Path) -> list[int]:
    pids = []
    with namespaces.use(ns):
        for i in range(pods):
            id = f"p{i:02d}"
            spec = container_spec(ns, id, rootfs, "/bin/busybox", "sleep", "1000")
            task = await tm.create(id, CreateOpts(spec=spec, runtime=runtime))
            await task.start()
            shim_pid, _ = await task.connect()
            pids.append(shim_pid)
    return pids


async def _teardown(tm: TaskManager, ns: str) -> None:
    with namespaces.use(ns):
        for task in await tm.tasks():
            with contextlib.suppress(Exception):
                await task.kill(9)
                await task.wait()
            with contextlib.suppress(Exception):
                await tm.delete(task.id)
    _remove_cgroups(ns)


def _ksm(name: str) -> int:
    try:
        with open(f"/sys/kernel/mm/ksm/{name}") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return -1


def _ksm_stop() -> None:
    """Stop the merging scanner again; pages merged meanwhile split on their next write."""
    with contextlib.suppress(OSError), open("/sys/kernel/mm/ksm/run", "w") as fh:
        fh.write("0\n")


def _ksmd_cpu_seconds() -> float:
    """CPU time the kernel's same-page merging thread has used so far."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(f"/proc/{entry.name}/comm").read_text().strip() == "ksmd":
                    fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
                    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                continue
    return 0.0


async def _settle(measure: Any, merging: bool, limit: float) -> tuple[dict[str, Any], float]:
    """Measure until memory stops changing: for ``merging`` shims, after the kernel's merging
    scanner went at least three times over everything (merging needs two passes), and the
    per-pod PSS moved less than 1 % in the last 10 s; at most ``limit`` seconds."""
    t0 = time.monotonic()
    scans0 = _ksm("full_scans")
    history: list[tuple[float, int]] = []
    while True:
        now = time.monotonic() - t0
        result = measure()
        history.append((now, result["pss_per_pod_kib"]))
        window = [kib for t, kib in history if t >= now - 10]
        stable = now >= 10 and max(window) - min(window) <= 0.01 * max(window)
        if merging:
            stable = stable and _ksm("full_scans") >= scans0 + 3
        if stable or now >= limit:
            return result, now
        await asyncio.sleep(2.0)


@contextlib.asynccontextmanager
async def _events_sink(address: str) -> AsyncIterator[None]:
    """The daemon's ttrpc socket as the shims see it, for shims started without a daemon: it
    takes the task events they forward, and drops them (nobody subscribes). Without it both
    kinds of shim keep retrying, and logging, events nobody receives while they are measured."""
    from arun.events.exchange import Exchange
    from arun.services.events.ttrpc import EventsTTRPC
    from arun.ttrpc import Server

    server = Server()
    EventsTTRPC(Exchange()).register_ttrpc(server)
    await server.serve_unix(address)
    try:
        yield
    finally:
        await server.shutdown(0)


@contextlib.asynccontextmanager
async def pod_bench_env() -> AsyncIterator[tuple[ShimEnv, Path, Path]]:
    """What the pod benchmarks (and ``tools/``' page-level probes) run in: a work directory with
    a busybox rootfs, the shims' environment, and an events sink on its ttrpc address, as a
    daemon has: (environment, work directory, rootfs)."""
    with workdir() as base:
        rootfs = busybox_rootfs(base / "rootfs")
        env = shim_env(str(base / "arun.sock"), str(base / "arun.sock.ttrpc"), str(base / "s"))
        async with _events_sink(env.ttrpc_address):
            yield env, base, rootfs


class RunningPods(NamedTuple):
    shims: ShimManager
    tm: TaskManager
    ns: str
    pids: list[int]  # each pod's shim (one per pod)
    zygote_ready_ms: int


@contextlib.asynccontextmanager
async def running_pods(
    env: ShimEnv,
    base: Path,
    rootfs: Path,
    runtime: str,
    count: int,
    *,
    prefix: str = "bench",
    merge_memory: bool = True,
) -> AsyncIterator[RunningPods]:
    """``count`` busybox pods of ``runtime`` through a real task manager (its shim manager's
    zygote started first), in a namespace of their own; killed, deleted and closed after."""
    shims = ShimManager(env, use_zygote=True, merge_memory=merge_memory)
    started = time.monotonic()
    shims.start_zygote()
    await shims.wait_zygote()
    ready_ms = round((time.monotonic() - started) * 1000)
    ns = f"{prefix}-" + uuid.uuid4().hex[:8]
    tm = TaskManager(base / "root", base / "state", shims)
    try:
        yield RunningPods(shims, tm, ns, await _pods(tm, runtime, ns, count, rootfs), ready_ms)
    finally:
        await _teardown(tm, ns)
        await tm.close()
        await shims.close()


async def bench_pss(pods: int, settle: float = 240.0) -> dict[str, Any]:
    """PSS per pod right after the pods started and once it has settled. arun's shims run
    with the daemon's defaults: the zygote marks its memory mergeable and the kernel's
    same-page merging is switched on (``main`` switches it back off if it was off before)."""
    from arun.runtime import ksm

    results: dict[str, Any] = {}
    merging = ksm.switch_on()
    async with pod_bench_env() as (env, base, rootfs):
        await _pss_series(env, base, rootfs, pods, settle, merging, results)
    results["ksm"] = "on" if merging else "unavailable"
    if "arun (zygote)" in results and "containerd-shim-runc-v2" in results:
        a, g = results["arun (zygote)"], results["containerd-shim-runc-v2"]
        results["ratio_per_pod"] = round(a["pss_per_pod_kib"] / g["pss_per_pod_kib"], 2)
        results["ratio_per_pod_at_start"] = round(
            a["pss_per_pod_kib_at_start"] / g["pss_per_pod_kib_at_start"], 2
        )
    return results


async def _pss_series(
    env: ShimEnv, base: Path, rootfs: Path, pods: int, settle: float, merging: bool, results: dict[str, Any]
) -> None:
    """``pods`` pods of each kind of shim, one kind after the other, into ``results``."""
    for name, runtime in (("arun (zygote)", RUNTIME_ARUN), ("containerd-shim-runc-v2", RUNTIME_RUNC)):
        async with running_pods(env, base, rootfs, runtime, pods) as running:
            shims = running.shims
            zygote = shims.zygote.pid if runtime == RUNTIME_ARUN and shims.zygote is not None else 0

            def measure(shim_pids: list[int] = running.pids, zygote: int = zygote) -> dict[str, Any]:
                per_shim = [pss_kib(p) for p in set(shim_pids)]
                # Looked up at every measurement: the spares used up by the last starts are
                # forked again a moment later, and must be counted then.
                helpers = [zygote, *_spares_of(zygote, env.ttrpc_address)] if zygote else []
                helper_kib = sum(pss_kib(p) for p in helpers)
                return {
                    "shims": len(per_shim),
                    "pss_per_shim_kib": round(statistics.mean(per_shim)),
                    "zygote_and_spares_kib": helper_kib,
                    "spares": len(helpers) - 1 if helpers else 0,
                    "pss_per_pod_kib": round((sum(per_shim) + helper_kib) / pods),
                }

            await asyncio.sleep(1.0)  # settle (GC, lazily loaded pages)
            at_start = measure()
            cpu0 = _ksmd_cpu_seconds()
            mergeable = runtime == RUNTIME_ARUN and merging
            settled, seconds = await _settle(measure, mergeable, settle)
            cpu1 = _ksmd_cpu_seconds()
            # What keeping the pages merged costs from then on (ksmd keeps scanning).
            await asyncio.sleep(10.0)
            steady = (_ksmd_cpu_seconds() - cpu1) / 10.0
            results[name] = {
                **settled,
                "pss_per_pod_kib_at_start": at_start["pss_per_pod_kib"],
                "settled_after_s": round(seconds, 1),
                "ksmd_cpu_s_to_settle": round(cpu1 - cpu0, 2),
                "ksmd_cpu_pct_settled": round(100 * steady, 1),
            }


# -- run -----------------------------------------------------------------------------------------


def _env(src: str | None = None) -> dict[str, str]:
    """The daemon's environment: this tree's arun (or the one under ``src``) first on the path."""
    if src is not None:
        return {**os.environ, "PYTHONPATH": src}
    src = str(Path(__file__).resolve().parent.parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _wait_socket(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited:\n{log.read_text()[-3000:]}")
        r = subprocess.run(["ctr", "--address", str(path), "version"], capture_output=True, check=False)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.args!r} did not serve on {path}")


@contextlib.contextmanager
def private_arun(base: Path, src: str | None = None) -> Iterator[Path]:
    sock = base / "arun.sock"
    log = base / "arun.log"
    argv = [
        sys.executable,
        "-m",
        "arun",
        "daemon",
        "--root",
        str(base / "root"),
        "--state",
        str(base / "state"),
    ]
    argv += ["--address", str(sock)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, env=_env(src), start_new_session=True
        )
    try:
        _wait_socket(sock, proc, log)
        yield sock
    finally:
        stop(proc)


@contextlib.contextmanager
def private_containerd(base: Path) -> Iterator[Path]:
    sock = base / "c.sock"
    log = base / "containerd.log"
    config = base / "config.toml"
    config.write_text(containerd_config(base / "root", base / "state", sock))
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_socket(sock, proc, log)
        yield sock
    finally:
        stop(proc)


def _ctr(sock: Path, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(sock), "--namespace", ns, *args], capture_output=True, text=True, check=check
    )


class _Series:
    """``ctr run -d`` of containers r00, r01 … in a namespace of its own on one daemon."""

    def __init__(self, sock: Path, archive: Path, runtime: str) -> None:
        self.sock = sock
        self.runtime = runtime
        self.ns = "bench-" + uuid.uuid4().hex[:8]
        self.ids: list[str] = []
        self.times: list[float] = []
        self.create_ids: list[str] = []
        self.create_times: list[float] = []
        _ctr(sock, self.ns, "images", "import", str(archive))

    def create_one(self) -> None:
        """``ctr containers create`` alone: the container part of ``ctr run`` (image, lease,
        snapshot, record), to tell it from the task part."""
        id = f"k{len(self.create_ids):02d}"
        self.create_ids.append(id)
        t0 = time.perf_counter()
        _ctr(self.sock, self.ns, "containers", "create", "--runtime", self.runtime, IMAGE, id, "sleep", "1")
        self.create_times.append((time.perf_counter() - t0) * 1000)

    def run_one(self, record: bool = True) -> None:
        id = f"r{len(self.ids):02d}"
        self.ids.append(id)
        t0 = time.perf_counter()
        _ctr(self.sock, self.ns, "run", "-d", "--runtime", self.runtime, IMAGE, id, "sleep", "1000")
        elapsed = (time.perf_counter() - t0) * 1000
        status = _ctr(self.sock, self.ns, "task", "ls").stdout
        if id not in status or "RUNNING" not in status:
            raise RuntimeError(f"{id} is not running:\n{status}")
        if record:
            self.times.append(elapsed)

    def cleanup(self) -> None:
        for id in self.ids:
            _ctr(self.sock, self.ns, "task", "kill", "-s", "SIGKILL", id, check=False)
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and "RUNNING" in _ctr(self.sock, self.ns, "task", "ls", check=False).stdout
        ):
            time.sleep(0.1)
        for id in self.ids:
            _ctr(self.sock, self.ns, "task", "delete", id, check=False)
        for id in self.ids + self.create_ids:
            _ctr(self.sock, self.ns, "containers", "rm", id, check=False)
        _remove_cgroups(self.ns)


def series_of_trees(
    base: Path, stack: contextlib.ExitStack, archive: Path, trees: dict[str, str], containerd: bool = True
) -> dict[str, _Series]:
    """For A/B tools (tools/*/ab_*.py): a private arun daemon per source tree (name → its ``src``
    directory) and, with ``containerd``, a private containerd 1.6, each with the image of
    ``archive`` imported in a namespace of its own; every daemon, container and namespace is
    removed when ``stack`` closes."""
    socks = {}
    for name, src in trees.items():
        (base / name).mkdir()
        socks[name] = stack.enter_context(private_arun(base / name, src=os.path.abspath(src)))
    if containerd:
        (base / "containerd").mkdir()
        socks["containerd"] = stack.enter_context(private_containerd(base / "containerd"))
    series = {
        name: _Series(sock, archive, RUNTIME_RUNC if name == "containerd" else RUNTIME_ARUN)
        for name, sock in socks.items()
    }
    for s in series.values():
        stack.callback(s.cleanup)
    return series


def bench_run(runs: int) -> dict[str, Any]:
    from arun.testing.ociarchive import Entry, build_archive
    from arun.testing.ociarchive import busybox_rootfs as layer

    with workdir() as base, contextlib.ExitStack() as stack:
        archive = base / "image.tar"
        build_archive(archive, IMAGE, [[*layer(), Entry("bin/sleep", "symlink", b"busybox")]])
        (base / "arun").mkdir()
        (base / "containerd").mkdir()
        arun_sock = stack.enter_context(private_arun(base / "arun"))
        ctd_sock = stack.enter_context(private_containerd(base / "containerd"))
        series = {
            "arun, arun shim": _Series(arun_sock, archive, RUNTIME_ARUN),
            "arun, Go shim": _Series(arun_sock, archive, RUNTIME_RUNC),
            "containerd 1.6, Go shim": _Series(ctd_sock, archive, RUNTIME_RUNC),
        }
        for s in series.values():
            stack.callback(s.cleanup)
        for s in series.values():
            s.run_one(record=False)  # warm up (zygote, caches)
        # Interleaved, so that whatever else runs on the machine weighs on all of them alike.
        for _ in range(runs):
            for s in series.values():
                s.run_one()
                s.create_one()
        results: dict[str, Any] = {
            name: {
                "p50_ms": round(p50(s.times), 1),
                "min_ms": round(min(s.times), 1),
                "containers_create_p50_ms": round(p50(s.create_times), 1),
                # What the task takes: run minus the container part.
                "task_part_ms": round(p50(s.times) - p50(s.create_times), 1),
            }
            for name, s in series.items()
        }
    ref = results["containerd 1.6, Go shim"]
    for name in ("arun, arun shim", "arun, Go shim"):
        results[name]["vs_containerd"] = round(results[name]["p50_ms"] / ref["p50_ms"], 2)
        results[name]["task_part_vs_containerd"] = round(
            results[name]["task_part_ms"] / ref["task_part_ms"], 2
        )
    return results


# -- main ----------------------------------------------------------------------------------------


async def _amain(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    only = set(args.only.split(",")) if args.only else {"start", "pss", "run"}
    # The pss part and the daemons of the run part switch the kernel's same-page merging on, as
    # arun's daemon does by default; leave the host as it was.
    ksm_was = _ksm("run")
    try:
        if "start" in only:
            out["start"] = await bench_start(args.runs)
        if "pss" in only:
            out["pss"] = await bench_pss(args.pods, args.settle)
        if "run" in only:
            out["run"] = await asyncio.to_thread(bench_run, args.runs)
    finally:
        if ksm_was == 0 and _ksm("run") == 1:
            _ksm_stop()
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m arun.benchmarks.shim_bench")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--only", default="", help="comma-separated: start, pss, run")
    ap.add_argument(
        "--settle", type=float, default=240.0, help="pss: most seconds to wait for memory to settle"
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("runc") is None:
        print("shim_bench needs root and runc; skipped")
        return 0
    results = asyncio.run(_amain(args))
    for section, rows in results.items():
        print(f"-- {section}")
        for name, row in rows.items():
            print(f"  {name:28} {row}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
