"""Measure the arun shim against containerd-shim-runc-v2 on this machine (root, runc needed).

    python tools/bench_shim.py [--runs N]

For each of arun (fresh Python), arun (forked from a preloaded template, the zygote way) and the
Go shim:

* start: wall time of the ``start`` command (the template: of the fork request), and the time
  until the shim answers ``Connect`` — what the daemon actually waits for;
* memory: PSS (/proc/PID/smaps_rollup) of the shim idling with one running busybox container,
  the template still alive for the forked variant (shared pages are then split between them).

Not a test: nothing is asserted. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, SRC)

from arun.api.containerd.runtime.task.v2 import shim_pb2 as v2  # noqa: E402
from arun.api.containerd.services.ttrpc.events.v1 import events_pb2  # noqa: E402, F401
from arun.api.containerd.types.runc.options import oci_pb2  # noqa: E402
from arun.errdefs import grpc as errgrpc  # noqa: E402
from arun.ttrpc import Client, Server, ServiceStub  # noqa: E402

TEMPLATE = textwrap.dedent(
    """
    import os, sys
    from arun.shim import manager, server
    server.preload()
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    for line in sys.stdin:
        bundle, sock, ns, id, ttrpc, root = line.split()
        listener = manager.listen(sock)
        pid = os.fork()
        if pid == 0:
            params = server.ServeParams(
                namespace=ns, id=id, bundle=bundle, ttrpc_address=ttrpc, runc_root=root
            )
            os._exit(server.serve(params, listener.fileno()))
        listener.close()
        sys.stdout.write(f"{pid}\\n"); sys.stdout.flush()
    """
)


class Events:
    async def Forward(self, request: Any) -> Any:
        from google.protobuf import empty_pb2

        return empty_pb2.Empty()


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.read(fd, 65536)


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def spec(cgroup: str) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "process": {"args": ["/bin/busybox", "sleep", "1000"], "cwd": "/", "env": ["PATH=/bin"]},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {
            "cgroupsPath": cgroup,
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
        },
    }


async def connect_until_ready(address: str, t0: float) -> tuple[ServiceStub, Client, float]:
    while True:
        try:
            client = await Client.connect(address, timeout=5, from_status=errgrpc.from_code)
            task = ServiceStub(client, "containerd.task.v2.Task")
            await task.Connect(v2.ConnectRequest(id="x"), timeout=5)
            return task, client, time.perf_counter() - t0
        except (OSError, ConnectionError):
            await asyncio.sleep(0.001)


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ns = f"bench-{uuid.uuid4().hex[:6]}"
        self.cg = f"arun-bench-{uuid.uuid4().hex[:6]}"
        self.rootfs = root / "busybox"
        (self.rootfs / "bin").mkdir(parents=True)
        shutil.copy2("/bin/busybox", self.rootfs / "bin" / "busybox")
        self.events = str(root / "ev.sock")
        self.grpc = str(root / "grpc.sock")
        self.pids: set[int] = set()
        self.log_fds: list[int] = []
        self.template: subprocess.Popen[str] | None = None

    def bundle(self, id: str) -> str:
        b = self.root / "b" / id
        (b / "rootfs").mkdir(parents=True)
        (b / "config.json").write_text(json.dumps(spec(f"/{self.cg}/{id}")))
        # The shim log FIFO, opened and drained as containerd does (the Go shim exits without it).
        os.mkfifo(b / "log")
        fd = os.open(b / "log", os.O_RDWR | os.O_NONBLOCK)
        self.log_fds.append(fd)
        asyncio.get_running_loop().add_reader(fd, _drain, fd)
        return str(b)

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            PYTHONPATH=SRC,
            TTRPC_ADDRESS=self.events,
            ARUN_SHIM_SOCKET_DIR=str(self.root / "s"),
            ARUN_SHIM_RUNC_ROOT=str(self.root / "runc"),
        )

    def start_command(self, kind: str, id: str) -> list[str]:
        common = ["-namespace", self.ns, "-address", self.grpc, "-publish-binary", "/bin/true"]
        common += ["-id", id, "start"]
        if kind == "go":
            return ["containerd-shim-runc-v2", *common]
        return [sys.executable, "-m", "arun.shim", *common]

    async def start(self, kind: str, id: str, bundle: str) -> tuple[float, float, ServiceStub, Client]:
        t0 = time.perf_counter()
        if kind == "zygote":
            assert self.template is not None and self.template.stdin and self.template.stdout
            sock = str(self.root / "s" / id)
            self.template.stdin.write(f"{bundle} {sock} {self.ns} {id} {self.events} {self.root / 'runc'}\n")
            self.template.stdin.flush()
            self.pids.add(int(await asyncio.to_thread(self.template.stdout.readline)))
            address = sock
        else:
            proc = await asyncio.create_subprocess_exec(
                *self.start_command(kind, id),
                cwd=bundle,
                env=self.env(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"{kind} start failed: {err.decode()}")
            address = out.decode().strip()
            if address.startswith("{"):
                address = json.loads(address)["address"]
        started = time.perf_counter() - t0
        task, client, ready = await connect_until_ready(address, t0)
        return started, ready, task, client

    async def run_container(self, task: ServiceStub, id: str, bundle: str) -> int:
        req = v2.CreateTaskRequest(id=id, bundle=bundle)
        req.rootfs.add(type="bind", source=str(self.rootfs), options=["rbind", "rw"])
        req.options.type_url = "containerd.runc.v1.Options"
        req.options.value = oci_pb2.Options(root=str(self.root / "runc")).SerializeToString()
        await task.Create(req)
        await task.Start(v2.StartRequest(id=id))
        return int((await task.Connect(v2.ConnectRequest(id=id))).shim_pid)

    async def stop_container(self, task: ServiceStub, client: Client, id: str) -> None:
        await task.Kill(v2.KillRequest(id=id, signal=9))
        await task.Wait(v2.WaitRequest(id=id), timeout=20)
        await task.Delete(v2.DeleteRequest(id=id))
        with contextlib.suppress(Exception):
            await task.Shutdown(v2.ShutdownRequest(id=id), timeout=5)
        await client.close()

    async def one(self, kind: str) -> dict[str, float]:
        """Start a shim, time it, shut it down."""
        id = f"{kind}-{uuid.uuid4().hex[:8]}"
        bundle = self.bundle(id)
        started, ready, task, client = await self.start(kind, id, bundle)
        pid = int((await task.Connect(v2.ConnectRequest(id=id))).shim_pid)
        self.pids.add(pid)
        with contextlib.suppress(Exception):
            await task.Shutdown(v2.ShutdownRequest(id=id), timeout=5)
        await client.close()
        return {"start": started, "ready": ready}

    async def memory(self, kind: str, pods: int) -> dict[str, float]:
        """``pods`` shims of ``kind``, each running one container, idle: mean PSS and RSS."""
        running = []
        for _ in range(pods):
            id = f"{kind}-{uuid.uuid4().hex[:8]}"
            bundle = self.bundle(id)
            _s, _r, task, client = await self.start(kind, id, bundle)
            pid = await self.run_container(task, id, bundle)
            self.pids.add(pid)
            running.append((id, pid, task, client))
        await asyncio.sleep(3)  # idle
        pss = [pss_kb(pid) for _, pid, _, _ in running]
        rss = [rss_kb(pid) for _, pid, _, _ in running]
        for id, _pid, task, client in running:
            await self.stop_container(task, client, id)
        return {"pss_kb": statistics.mean(pss), "rss_kb": statistics.mean(rss)}

    def cleanup(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self.log_fds:
            loop.remove_reader(fd)
            os.close(fd)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.template is not None:
            self.template.kill()
            self.template.wait()
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            parent = os.path.join("/sys/fs/cgroup", hierarchy, self.cg)
            if os.path.isdir(parent):
                for child in os.listdir(parent):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(parent, child))
                with contextlib.suppress(OSError):
                    os.rmdir(parent)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--pods", type=int, default=20, help="shims alive at once for the memory figure")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sb-", dir="/tmp"))
    bench = Bench(root)
    server = Server()
    server.register("containerd.services.events.ttrpc.v1.Events", Events())
    await server.serve_unix(bench.events)
    bench.template = subprocess.Popen(  # noqa: ASYNC220 - line-oriented pipe protocol, set up once
        [sys.executable, "-c", TEMPLATE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=bench.env(),
        cwd=root,
    )
    assert bench.template.stdout is not None
    assert bench.template.stdout.readline().strip() == "ready"
    results: dict[str, list[dict[str, float]]] = {"go": [], "arun": [], "zygote": []}
    memory: dict[str, dict[str, float]] = {}
    try:
        for _ in range(args.runs):
            for kind in results:
                results[kind].append(await bench.one(kind))
        for kind in results:
            memory[kind] = await bench.memory(kind, args.pods)
    finally:
        await server.close()
        bench.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    bare = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)  # noqa: ASYNC221 - timing it
        bare.append(time.perf_counter() - t0)
    print(f"(bare `python -c pass` p50: {statistics.median(bare) * 1000:.1f} ms)")
    summary: dict[str, dict[str, float]] = {}
    print(f"{'shim':<8} {'start p50 ms':>13} {'ready p50 ms':>13} {'PSS KiB':>9} {'RSS KiB':>9}")
    for kind, runs in results.items():
        s = {
            "start_p50_ms": statistics.median(r["start"] for r in runs) * 1000,
            "ready_p50_ms": statistics.median(r["ready"] for r in runs) * 1000,
            "pss_kb": memory[kind]["pss_kb"],
            "rss_kb": memory[kind]["rss_kb"],
        }
        summary[kind] = s
        times = f"{s['start_p50_ms']:>13.1f} {s['ready_p50_ms']:>13.1f}"
        print(f"{kind:<8} {times} {s['pss_kb']:>9.0f} {s['rss_kb']:>9.0f}")
    print(f"(PSS/RSS: mean over {args.pods} idle shims with one running container each)")
    extra = {"python_bare_p50_ms": statistics.median(bare) * 1000, "load": os.getloadavg()[0]}
    print(json.dumps({"runs": args.runs, "pods": args.pods, **extra, **summary}))


if __name__ == "__main__":
    asyncio.run(main())
