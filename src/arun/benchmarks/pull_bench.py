"""Pull benchmark: pull + unpack of a ≥100 MB, multi-layer image from a loopback registry,
arun against containerd 1.6 on the same machine in the same run, and the arun daemon's
loop responsiveness while it pulls.

    python -m arun.benchmarks.pull_bench [--runs 3] [--layers 6] [--mb 120] [--json]

What it does:

1. builds an image in Python (``arun.testing.images``): a busybox base with a few
   thousand small files, then layers of mixed content — incompressible blobs, text, many
   small files — gzip-compressed, ``--mb`` megabytes of compressed layers in total;
2. starts Debian's ``docker-registry`` on 127.0.0.1 and pushes the image there;
3. containerd: for each run, a private ``containerd`` (its own root, state and socket,
   CRI disabled, overlayfs) and ``ctr images pull --plain-http`` (which fetches and
   unpacks into overlayfs), timed from start to exit;
4. arun: for each run, a private ``arun`` daemon (its own root/state/socket) and
   ``arun images pull --plain-http`` the same way — while a second process calls the
   gRPC ``Version`` RPC every 10 ms and records each call's latency;
5. prints the medians, the ratio arun/containerd (goal ≤ 1.0) and the Version p50/p99
   (goal p99 ≤ 50 ms).

Nothing here is a test: no assertions on timings. Needs root (overlayfs), containerd,
ctr and docker-registry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from arun.testing import images as im
from arun.testing.registry import RegistryServer, registry

__all__ = ["build_bench_image", "main", "run_containerd_pull"]

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"


def _text(rnd: random.Random, n: int) -> bytes:
    words = [b"alpha", b"beta", b"gamma", b"delta", b"log", b"error", b"info", b"request", b"GET", b"/api/v1"]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rnd.choice(words) for _ in range(12)) + b" %d\n" % rnd.randrange(1 << 30)
    return bytes(out[:n])


def build_bench_image(total_mb: int = 120, layers: int = 6, seed: int = 42) -> im.BuiltImage:
    """An image of ``layers`` gzip layers, about ``total_mb`` MB compressed."""
    rnd = random.Random(seed)
    base = im.busybox_layer("gzip")
    base.entries += [im.dir_("usr"), im.dir_("usr/lib")]
    for d in range(20):
        base.entries.append(im.dir_(f"usr/lib/pkg{d}"))
        for f in range(100):
            base.entries.append(im.file(f"usr/lib/pkg{d}/f{f}.txt", _text(rnd, rnd.randrange(200, 6000))))
    out = [base]
    per_layer = max(1, (total_mb << 20) // max(1, layers - 1))
    for i in range(1, layers):
        entries: list[im.Entry] = [im.dir_(f"data{i}")]
        size = 0
        n = 0
        while size < per_layer:
            kind = rnd.random()
            if kind < 0.7:
                chunk = rnd.randbytes(rnd.randrange(256 << 10, 2 << 20))  # incompressible
            elif kind < 0.8:
                chunk = _text(rnd, rnd.randrange(64 << 10, 1 << 20))
            else:
                chunk = _text(rnd, rnd.randrange(100, 4000))
            entries.append(im.file(f"data{i}/f{n}", chunk, 0o644))
            size += len(chunk) if kind < 0.7 else len(chunk) // 4
            n += 1
        out.append(im.Layer(entries, "gzip"))
    return im.build_image(out)


@dataclass
class Runs:
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.asynccontextmanager
async def private_containerd(workdir: Path) -> AsyncIterator[str]:
    """A containerd 1.6 of our own: root, state and socket under ``workdir``."""
    root, state = workdir / "root", workdir / "state"
    root.mkdir(parents=True)
    state.mkdir(parents=True)
    sock = str(state / "containerd.sock")
    cfg = workdir / "config.toml"
    cfg.write_text(
        "version = 2\n"
        f'root = "{root}"\n'
        f'state = "{state}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        '[debug]\n  address = ""\n'
        '[metrics]\n  address = ""\n'
    )
    proc = _spawn([CONTAINERD, "--config", str(cfg)], workdir / "containerd.log")
    try:
        for _ in range(200):
            if await asyncio.to_thread(os.path.exists, sock):
                r = await asyncio.to_thread(
                    subprocess.run, [CTR, "-a", sock, "version"], capture_output=True, check=False
                )
                if r.returncode == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"containerd exited: {(workdir / 'containerd.log').read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("containerd did not start")
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        # Overlay snapshots may still be mounted if containerd died badly.
        await asyncio.to_thread(subprocess.run, ["umount", "-R", str(root)], capture_output=True, check=False)
        await asyncio.to_thread(shutil.rmtree, workdir, True)


async def run_containerd_pull(ref: str, runs: int, tmp: Path) -> Runs:
    out = Runs()
    for i in range(runs):
        async with private_containerd(tmp / f"containerd-{i}") as sock:
            t0 = time.perf_counter()
            r = await asyncio.to_thread(
                subprocess.run,
                [CTR, "-a", sock, "-n", "bench", "images", "pull", "--plain-http", ref],
                capture_output=True,
                check=False,
            )
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                raise RuntimeError(f"ctr pull failed: {r.stderr.decode()[-2000:]}")
            out.seconds.append(dt)
    return out


async def _seed(reg: RegistryServer, img: im.BuiltImage) -> str:
    await im.push_raw(reg.url, "bench/big", "v1", img)
    return f"{reg.host}/bench/big:v1"


async def run_arun_pull(ref: str, runs: int, tmp: Path) -> tuple[Runs, list[float]]:
    """Pull through a private arun daemon (``arun images pull``), sampling Version latency."""
    from arun.benchmarks.arun_daemon import private_arun, version_sampler

    out = Runs()
    latencies: list[float] = []
    for i in range(runs):
        async with private_arun(tmp / f"arun-{i}") as sock:
            async with version_sampler(sock, interval=0.01) as samples:
                t0 = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "arun", "images", "-a", sock, "-n", "bench",
                    "pull", "--plain-http", "--quiet", ref,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                    env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
                )  # fmt: skip
                _, err = await proc.communicate()
                dt = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"arun images pull failed: {err.decode()[-2000:]}")
            out.seconds.append(dt)
            latencies.extend(samples)
    return out, latencies


def _pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def amain(args: argparse.Namespace) -> dict[str, object]:
    t0 = time.perf_counter()
    img = await asyncio.to_thread(build_bench_image, args.mb, args.layers)
    compressed = sum(len(la.blob) for la in img.layers)
    uncompressed = sum(len(la.tar) for la in img.layers)
    files = sum(len(la.entries) for la in img.layers)
    print(
        f"image: {len(img.layers)} layers, {compressed / 1e6:.1f} MB compressed, "
        f"{uncompressed / 1e6:.1f} MB uncompressed, {files} entries "
        f"(built in {time.perf_counter() - t0:.1f}s)",
        file=sys.stderr,
    )
    tmp = Path(tempfile.mkdtemp(prefix="arun-pull-bench-", dir=args.tmp))
    result: dict[str, object] = {
        "layers": len(img.layers),
        "compressed_bytes": compressed,
        "uncompressed_bytes": uncompressed,
        "entries": files,
    }
    try:
        async with registry(tmp) as reg:
            ref = await _seed(reg, img)
            if not args.skip_containerd:
                ctd = await run_containerd_pull(ref, args.runs, tmp)
                result["containerd_seconds"] = ctd.seconds
                print(f"containerd 1.6 ctr pull: median {ctd.median:.2f}s {ctd.seconds}", file=sys.stderr)
            if not args.skip_arun:
                ar, lat = await run_arun_pull(ref, args.runs, tmp)
                result["arun_seconds"] = ar.seconds
                result["version_p50_ms"] = _pct(lat, 50) * 1000
                result["version_p99_ms"] = _pct(lat, 99) * 1000
                result["version_max_ms"] = max(lat) * 1000 if lat else float("nan")
                result["version_samples"] = len(lat)
                print(f"arun images pull: median {ar.median:.2f}s {ar.seconds}", file=sys.stderr)
                print(
                    f"Version every 10 ms during the pull: p50 {_pct(lat, 50) * 1000:.1f} ms, "
                    f"p99 {_pct(lat, 99) * 1000:.1f} ms ({len(lat)} calls; goal p99 <= 50 ms)",
                    file=sys.stderr,
                )
                if "containerd_seconds" in result:
                    ratio = ar.median / statistics.median(result["containerd_seconds"])  # type: ignore[arg-type]
                    result["ratio"] = ratio
                    print(f"ratio arun/containerd: {ratio:.2f} (goal <= 1.0)", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pull_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--mb", type=int, default=120, help="compressed size of the layers, about")
    p.add_argument("--tmp", default=None, help="directory for registries and daemon roots")
    p.add_argument("--skip-containerd", action="store_true")
    p.add_argument("--skip-arun", action="store_true")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = p.parse_args(argv)
    result = asyncio.run(amain(args))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
