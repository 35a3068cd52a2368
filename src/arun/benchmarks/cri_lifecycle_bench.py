"""Pod start-up latency through the CRI: arun against containerd 1.6, on this machine.

    python -m arun.benchmarks.cri_lifecycle_bench [--pods 20] [--warmup 2] [--go-shim]

One sample is what kubelet waits for when it starts a one-container pod with its
images present: ``RunPodSandbox`` + ``CreateContainer`` + ``StartContainer`` (busybox
``sleep``), measured at the client. Both runtimes run side by side, private to this
run (their own roots, state, sockets, runc roots), with the *same* CNI configuration
(one bridge, host-local IPAM, portmap, plus the loopback network both add), the same
images from one loopback ``docker-registry`` (pulled before measuring), and the same
security settings (containerd gets ``restrict_oom_score_adj``, which arun applies by itself
where root lacks CAP_SYS_RESOURCE). Samples alternate between the
runtimes (which one goes first alternates too) so machine load weighs alike; every
pod is stopped and removed after its sample, outside the timing.

Reports p50/p95/mean per runtime and p50 ratios against containerd 1.6. Goal: arun's
p50 <= 1.0x containerd's. ``--go-shim`` adds arun driving containerd's Go shim
(``io.containerd.runc.v2``). Not a test: nothing is asserted. Needs root, runc,
containerd, CNI plugins and docker-registry.
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
from collections.abc import Iterator
from pathlib import Path

from arun.api.cri.runtime.v1 import api_pb2
from arun.benchmarks.reference import stop
from arun.testing.cri import CRIClient, CRIEnv, cni_bin_dir


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


def containerd_config(base: Path, env: CRIEnv) -> str:
    return f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
plugin_dir = ""
[grpc]
  address = "{base / "c.sock"}"
[ttrpc]
  address = "{base / "c.sock.ttrpc"}"
[debug]
  level = "warn"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{env.image("pause")}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{base / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir()}"
    conf_dir = "{env.cni_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{env.certs_dir}"
"""


@contextlib.contextmanager
def private_containerd(base: Path, env: CRIEnv) -> Iterator[Path]:
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.toml").write_text(containerd_config(base, env))
    sock = base / "c.sock"
    log = open(base / "containerd.log", "wb")
    proc = subprocess.Popen(
        ["containerd", "--config", str(base / "config.toml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"containerd did not start:\n{(base / 'containerd.log').read_text()[-3000:]}"
                )
            time.sleep(0.05)
        yield sock
    finally:
        stop(proc)
        log.close()
        # Shims of removed pods are gone; unmount anything containerd left under its root.
        subprocess.run(
            ["sh", "-c", f"grep -o ' {base}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"],
            check=False,
            capture_output=True,
        )


class Runtime:
    def __init__(self, name: str, socket: Path, env: CRIEnv) -> None:
        self.name = name
        self.socket = socket
        self.env = env
        self.samples: list[float] = []
        self.parts: dict[str, list[float]] = {"runp": [], "create": [], "start": []}
        self.channel: object = None
        self.cri: CRIClient | None = None

    async def connect(self) -> None:
        from grpclib.client import Channel

        ch = Channel(path=str(self.socket))
        self.channel = ch
        self.cri = CRIClient(ch)
        deadline = time.monotonic() + 60
        while True:
            try:
                st = await self.cri.rt.Status(api_pb2.StatusRequest())
                if all(c.status for c in st.status.conditions):
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} is not ready")
            await asyncio.sleep(0.1)

    async def prepare(self) -> None:
        assert self.cri is not None
        for image in ("busybox", "pause"):
            await self.cri.pull(self.env.image(image))

    async def one(self, i: int, measured: bool) -> None:
        assert self.cri is not None
        cri = self.cri
        cfg = cri.pod_config(f"bench-{i}", namespace="bench")
        image = self.env.image("busybox")
        t0 = time.perf_counter()
        pod = await cri.run_pod(cfg)
        t1 = time.perf_counter()
        cid = await cri.create(pod, "app", image, ["sleep", "3600"], pod_config=cfg)
        t2 = time.perf_counter()
        await cri.start(cid)
        t3 = time.perf_counter()
        if measured:
            self.samples.append((t3 - t0) * 1000)
            for k, v in (("runp", t1 - t0), ("create", t2 - t1), ("start", t3 - t2)):
                self.parts[k].append(v * 1000)
        await cri.stop_pod(pod)
        await cri.remove_pod(pod)

    async def close(self) -> None:
        if self.cri is not None:
            with contextlib.suppress(Exception):
                await self.cri.remove_all_pods()
        close = getattr(self.channel, "close", None)
        if close is not None:
            close()


async def run(args: argparse.Namespace, runtimes: list[Runtime]) -> None:
    for r in runtimes:
        await r.connect()
        await r.prepare()
    for i in range(args.warmup):
        for r in runtimes:
            await r.one(10_000 + i, measured=False)
    for i in range(args.pods):
        order = runtimes if i % 2 == 0 else list(reversed(runtimes))
        for r in order:
            await r.one(i, measured=True)
    for r in runtimes:
        await r.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--go-shim", action="store_true", help="also measure arun with containerd-shim-runc-v2")
    args = p.parse_args(argv)
    missing = [b for b in ("runc", "containerd") if shutil.which(b) is None]
    if os.geteuid() != 0 or missing:
        print(f"cri_lifecycle_bench: needs root and {', '.join(missing) or 'runc, containerd'}; skipped")
        return 0
    env = CRIEnv.start()
    extra: list[CRIEnv] = []
    base = Path(tempfile.mkdtemp(prefix="arun-cri-bench-", dir="/tmp"))
    try:
        assert env.daemon is not None
        runtimes = [Runtime("arun", env.daemon.address, env)]
        if args.go_shim:
            go = CRIEnv.start(runtime_type="io.containerd.runc.v2")
            extra.append(go)
            assert go.daemon is not None
            # Same network and images as the others.
            runtimes.append(Runtime("arun (Go shim)", go.daemon.address, env))
        with private_containerd(base / "containerd", env) as sock:
            runtimes.append(Runtime("containerd 1.6", sock, env))
            asyncio.run(run(args, runtimes))
    finally:
        for e in extra:
            e.stop()
        env.stop()
        shutil.rmtree(base, ignore_errors=True)
    ref = runtimes[-1]
    results = {}
    print(f"pod start-up (RunPodSandbox + CreateContainer + StartContainer), {args.pods} pods, ms")
    print(f"{'runtime':<18} {'p50':>8} {'p95':>8} {'mean':>8} {'vs containerd':>14}")
    for r in runtimes:
        p50 = statistics.median(r.samples)
        ratio = p50 / statistics.median(ref.samples)
        results[r.name] = {
            "p50_ms": round(p50, 1),
            "p95_ms": round(_pct(r.samples, 0.95), 1),
            "mean_ms": round(statistics.fmean(r.samples), 1),
            "vs_containerd": round(ratio, 2),
            **{f"{k}_p50_ms": round(statistics.median(v), 1) for k, v in r.parts.items()},
        }
        print(
            f"{r.name:<18} {p50:8.1f} {_pct(r.samples, 0.95):8.1f} {statistics.fmean(r.samples):8.1f} "
            f"{ratio:13.2f}x   ("
            + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in r.parts.items())
            + ")"
        )
    print(json.dumps({"benchmark": "cri_lifecycle", "pods": args.pods, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
