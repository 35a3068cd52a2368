"""ttrpc unary round trips: arun client against an arun server and against containerd's runc shim.

``python -m arun.benchmarks.ttrpc_bench`` prints one table row per pairing:

* arun client ↔ arun server in the same process (one loop does both sides), with the
  default asyncio loop and with uvloop;
* arun client ↔ arun server in another process (the shape of daemon ↔ shim);
* arun client ↔ Debian's ``containerd-shim-runc-v2`` (Go ttrpc), ``containerd.task.v2.Task/State``
  on a created busybox container (needs root, runc, busybox; skipped otherwise).

Every pairing calls ``containerd.task.v2.Task/State`` with the same request; the arun server
answers with a StateResponse of the size the shim sends. Latency is measured one call at a
time (p50/p99 and the calls/s that gives); throughput again with 32 callers in flight.
Not a test: nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2

from arun.api.containerd.runtime.task.v2 import shim_pb2
from arun.api.containerd.types.runc.options import oci_pb2
from arun.ttrpc import Client, Server, ServiceStub

TASK = shim_pb2.DESCRIPTOR.services_by_name["Task"]
SHIM = "/usr/bin/containerd-shim-runc-v2"
BUSYBOX = "/bin/busybox"
GOAL_P50_US = 150.0
_SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for the server process


class BenchTask:
    """containerd.task.v2.Task with only State, answering like a shim with a running task."""

    def __init__(self) -> None:
        self._reply = shim_pb2.StateResponse(
            id="bench",
            bundle="/run/containerd/io.containerd.runtime.v2.task/default/bench",
            pid=4242,
            status="RUNNING",
            stdout="/run/containerd/fifo/123/bench-stdout",
            stderr="/run/containerd/fifo/123/bench-stderr",
        )

    async def State(self, request: shim_pb2.StateRequest) -> shim_pb2.StateResponse:
        return self._reply


@dataclass
class Result:
    name: str
    p50_us: float
    p99_us: float
    seq_calls_s: float
    conc_calls_s: float
    note: str = ""


async def measure(name: str, stub: Any, request: Any, calls: int, concurrency: int, note: str = "") -> Result:
    state = stub.State
    for _ in range(min(2000, calls // 5 + 1)):
        await state(request)
    lat = []
    perf = time.perf_counter_ns
    t_all = perf()
    for _ in range(calls):
        t0 = perf()
        await state(request)
        lat.append(perf() - t0)
    seq_elapsed = (perf() - t_all) / 1e9
    lat.sort()

    per_worker = max(1, calls // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            await state(request)

    t0 = perf()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    conc_elapsed = (perf() - t0) / 1e9
    return Result(
        name,
        lat[len(lat) // 2] / 1000,
        lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000,
        calls / seq_elapsed,
        per_worker * concurrency / conc_elapsed,
        note,
    )


# -- arun ↔ arun -----------------------------------------------------------------------------------


async def _bench_in_process(name: str, calls: int, concurrency: int) -> Result:
    d = tempfile.mkdtemp(prefix="ttrpc-bench-")
    path = os.path.join(d, "s")
    server = Server()
    server.register(TASK, BenchTask())
    await server.serve_unix(path)
    try:
        async with await Client.connect(path) as client:
            return await measure(
                name, ServiceStub(client, TASK), shim_pb2.StateRequest(id="bench"), calls, concurrency
            )
    finally:
        await server.close()
        shutil.rmtree(d, ignore_errors=True)


async def _bench_other_process(name: str, loop_name: str, calls: int, concurrency: int) -> Result:
    d = tempfile.mkdtemp(prefix="ttrpc-bench-")
    path = os.path.join(d, "s")
    src = _SRC
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "arun.benchmarks.ttrpc_bench",
        "--serve",
        path,
        "--loop",
        loop_name,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"bench server did not start: {line!r}")
        async with await Client.connect(path) as client:
            return await measure(
                name, ServiceStub(client, TASK), shim_pb2.StateRequest(id="bench"), calls, concurrency
            )
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        await proc.wait()
        shutil.rmtree(d, ignore_errors=True)


async def _serve(path: str) -> None:
    server = Server()
    server.register(TASK, BenchTask())
    await server.serve_unix(path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.close()


# -- arun ↔ containerd-shim-runc-v2 ----------------------------------------------------------------


def _shim_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in (SHIM, BUSYBOX):
        if not os.access(tool, os.X_OK):
            return f"needs {tool}"
    if shutil.which("runc") is None:
        return "needs runc"
    return None


def _caps() -> list[str]:
    return ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"]


def _bundle(root: str, cid: str, cgroup: str) -> str:
    bundle = os.path.join(root, cid)
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
    caps = _caps()
    spec = {
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/busybox", "sleep", "3600"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "cgroupsPath": cgroup,
        },
    }
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    os.mkfifo(os.path.join(bundle, "log"), 0o700)
    return bundle


async def _bench_shim(name: str, calls: int, concurrency: int) -> Result:
    tag = uuid.uuid4().hex[:8]
    root = tempfile.mkdtemp(prefix="ttrpc-bench-shim-")
    cid, ns, cgroup = f"bench-{tag}", f"arun-bench-{tag}", f"/arun-bench-{tag}"
    bundle = await asyncio.to_thread(_bundle, root, cid, cgroup)
    log_fd = os.open(os.path.join(bundle, "log"), os.O_RDWR | os.O_NONBLOCK)
    runc_root = os.path.join(root, "runc")
    had_socket_dir = await asyncio.to_thread(os.path.exists, "/run/containerd/s")
    args = [SHIM, "-namespace", ns, "-address", os.path.join(root, "containerd.sock")]
    args += ["-publish-binary", shutil.which("containerd") or "/usr/bin/containerd", "-id", cid]
    env = {**os.environ, "TTRPC_ADDRESS": os.path.join(root, "events.sock")}
    shim_pid = None
    address = None
    try:
        # subprocess.run closes every other fd in the child. (uvloop's subprocesses do not: the
        # daemonising shim then inherits the write end of start's stdout and EOF never comes.)
        proc = await asyncio.to_thread(
            subprocess.run,
            [*args, "start"],
            cwd=bundle,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        address = proc.stdout.decode().strip()
        if proc.returncode != 0 or not address.startswith("unix://"):
            raise RuntimeError(f"shim start failed: {proc.stdout!r} {proc.stderr!r}")
        async with await Client.connect(address, timeout=10) as client:
            task = ServiceStub(client, TASK)
            shim_pid = (await task.Connect(shim_pb2.ConnectRequest(id=cid), timeout=10)).shim_pid
            options = oci_pb2.Options(root=runc_root)
            await task.Create(
                shim_pb2.CreateTaskRequest(
                    id=cid,
                    bundle=bundle,
                    rootfs=[],
                    options=any_pb2.Any(
                        type_url=options.DESCRIPTOR.full_name, value=options.SerializeToString()
                    ),
                ),
                timeout=30,
            )
            try:
                return await measure(
                    name, task, shim_pb2.StateRequest(id=cid), calls, concurrency, note="created task"
                )
            finally:
                with contextlib.suppress(Exception):
                    await task.Delete(shim_pb2.DeleteRequest(id=cid), timeout=30)
                with contextlib.suppress(Exception):
                    await task.Shutdown(shim_pb2.ShutdownRequest(id=cid), timeout=10)
    finally:
        await asyncio.to_thread(
            _cleanup_shim, args, bundle, env, shim_pid, address, runc_root, ns, cid, cgroup
        )
        os.close(log_fd)
        shutil.rmtree(root, ignore_errors=True)
        if not had_socket_dir:
            for d in ("/run/containerd/s", "/run/containerd"):
                with contextlib.suppress(OSError):
                    os.rmdir(d)


def _cleanup_shim(
    args: list[str],
    bundle: str,
    env: dict[str, str],
    shim_pid: int | None,
    address: str | None,
    runc_root: str,
    ns: str,
    cid: str,
    cgroup: str,
) -> None:
    with contextlib.suppress(Exception):
        subprocess.run(
            [*args, "-bundle", bundle, "delete"], cwd=bundle, env=env, capture_output=True, timeout=30
        )
    if shim_pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(shim_pid, signal.SIGKILL)
    if address:
        with contextlib.suppress(OSError):
            os.unlink(address.removeprefix("unix://"))
    with contextlib.suppress(Exception):
        subprocess.run(
            ["runc", "--root", os.path.join(runc_root, ns), "delete", "--force", cid],
            capture_output=True,
            timeout=30,
        )
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[parts.index("-") + 1] == "cgroup":
                with contextlib.suppress(OSError):
                    os.rmdir(parts[4] + cgroup)


# -- driver ------------------------------------------------------------------------------------------


def _run(loop_name: str, make: Callable[[], Coroutine[Any, Any, Result]]) -> Result:
    if loop_name == "uvloop":
        import uvloop

        result: Result = uvloop.run(make())
        return result
    return asyncio.run(make())


def _loops() -> list[str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m arun.benchmarks.ttrpc_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--calls", type=int, default=20000, help="sequential calls per pairing")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="callers in flight for the throughput run"
    )
    parser.add_argument("--no-shim", action="store_true", help="skip containerd-shim-runc-v2")
    parser.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.serve:
        if opts.loop == "uvloop":
            import uvloop

            uvloop.run(_serve(opts.serve))
        else:
            asyncio.run(_serve(opts.serve))
        return 0

    calls, conc = opts.calls, opts.concurrency
    results: list[Result] = []
    skipped: list[str] = []
    plan: list[tuple[str, str, Callable[[str, str], Coroutine[Any, Any, Result]]]] = []
    for loop_name in _loops():

        async def one(name: str, loop_name: str) -> Result:
            return await _bench_in_process(name, calls, conc)

        async def two(name: str, loop_name: str) -> Result:
            return await _bench_other_process(name, loop_name, calls, conc)

        plan.append((f"arun ↔ arun, one process, {loop_name}", loop_name, one))
        plan.append((f"arun ↔ arun, two processes, {loop_name}", loop_name, two))
    why = "--no-shim" if opts.no_shim else _shim_unavailable()
    if why is None:
        for loop_name in _loops():

            async def shim(name: str, loop_name: str) -> Result:
                return await _bench_shim(name, calls, conc)

            plan.append((f"arun → containerd-shim-runc-v2 State, {loop_name}", loop_name, shim))
    else:
        skipped.append(f"arun → containerd-shim-runc-v2: skipped ({why})")
    for name, loop_name, bench in plan:
        print(f"running: {name}", file=sys.stderr, flush=True)
        results.append(_run(loop_name, functools.partial(bench, name, loop_name)))

    header = f"{'pairing':<46} {'p50 µs':>8} {'p99 µs':>8} {'calls/s':>9} {f'calls/s@{conc}':>11}"
    print(f"ttrpc unary round trip, containerd.task.v2.Task/State, {calls} calls")
    print(f"goal: p50 ≤ {GOAL_P50_US:.0f} µs between arun peers")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.name:<46} {r.p50_us:>8.1f} {r.p99_us:>8.1f} {r.seq_calls_s:>9.0f} {r.conc_calls_s:>11.0f}")
    for line in skipped:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
