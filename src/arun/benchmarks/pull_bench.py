"""Pull benchmark: pull + unpack of a ≥100 MB, multi-layer image from a loopback registry,
arun against containerd 1.6 on the same machine in the same run, and the arun daemon's
loop responsiveness while it pulls.

    python -m arun.benchmarks.pull_bench [--runs 3] [--layers 6] [--mb 120]
        [--image realistic|legacy] [--json]

What it does:

1. builds an image in Python (``arun.testing.images``), gzip layers of about ``--mb``
   megabytes compressed in total. ``realistic`` (the default): a busybox base with ~4,000
   small text files, then layers of ~800 small files plus larger ones, half compressible
   text and half incompressible — ~8,000 entries, ~2x compression, like a language
   runtime image. ``legacy``: the image of the first measurements (~2,200 entries,
   mostly incompressible data, ~1.1x compression);
2. starts Debian's ``docker-registry`` on 127.0.0.1 and pushes the image there;
3. containerd: for each run, a private ``containerd`` (its own root, state and socket,
   CRI disabled, overlayfs) and ``ctr images pull --plain-http`` (which fetches and
   unpacks into overlayfs), timed from start to exit;
4. arun: for each run, a private ``arun`` daemon (its own root/state/socket) and
   ``arun images pull --plain-http`` the same way — while a second process calls the
   gRPC ``Version`` RPC every 10 ms and records each call's latency;
5. prints the medians, the ratio arun/containerd (goal ≤ 1.0) and the Version p50/p99
   (goal p99 ≤ 50 ms).

Runs alternate (containerd, arun, containerd, arun …) and every run starts cold: a new
daemon with an empty root (no content, no snapshots). The roots of finished runs are
removed only at the end: deleting thousands of files just before the next run's pull
makes ext4 skip the recently freed inodes while allocating new ones, a cost that would
land on whichever runtime comes next.

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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from arun.benchmarks.reference import containerd_config, stop
from arun.testing import images as im
from arun.testing.registry import RegistryServer, registry

__all__ = ["build_bench_image", "build_realistic_image", "main", "run_containerd_pull"]

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


def _word_pool(rnd: random.Random, n: int) -> bytes:
    """Text (a few hundred distinct words, numbers, paths) compressing about 3x with gzip,
    like the sources, scripts and data files that fill real images."""
    words = [
        bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz_") for _ in range(rnd.randrange(2, 12)))
        for _ in range(600)
    ]
    out = bytearray()
    while len(out) < n:
        line = b" ".join(rnd.choice(words) for _ in range(rnd.randrange(3, 14)))
        out += line + b" %d /usr/lib/%s\n" % (rnd.randrange(1 << 20), rnd.choice(words))
    return bytes(out[:n])


def build_realistic_image(total_mb: int = 120, layers: int = 6, seed: int = 42) -> im.BuiltImage:
    """An image shaped like the ones pulled in practice, about ``total_mb`` MB compressed.

    The base layer is busybox plus ~4,000 small files (a distribution's /usr: text that
    compresses ~3x, 100 B to 16 KiB, in ~100 directories, a few symlinks); each upper
    layer has ~800 small files plus larger ones, half of the bytes compressible text and
    half incompressible (binaries, archives, media). About 8,000 entries and ~2x
    compression overall — roughly a language runtime image (python, node, openjdk).
    """
    rnd = random.Random(seed)
    pool = _word_pool(rnd, 8 << 20)

    def text(n: int) -> bytes:
        at = rnd.randrange(0, len(pool) - n) if n < len(pool) else 0
        return pool[at : at + n]

    base = im.busybox_layer("gzip")
    base.entries += [im.dir_("usr"), im.dir_("usr/share")]
    for d in range(100):
        top = f"usr/share/pkg{d:03d}"
        base.entries.append(im.dir_(top))
        for f in range(40):
            base.entries.append(im.file(f"{top}/f{f}.txt", text(rnd.randrange(100, 16 << 10))))
        base.entries.append(im.symlink(f"{top}/latest", "f0.txt"))
    out = [base]
    uppers = max(1, layers - 1)
    # Compressed bytes per upper layer: random bytes count fully, text about a third.
    per_layer = max(1, (total_mb << 20) // uppers)
    for i in range(1, layers):
        entries: list[im.Entry] = [im.dir_(f"opt{i}")]
        for d in range(20):
            entries.append(im.dir_(f"opt{i}/lib{d}"))
            for f in range(40):
                entries.append(im.file(f"opt{i}/lib{d}/m{f}.py", text(rnd.randrange(200, 8000))))
        compressed = 0
        n = 0
        while compressed < per_layer:
            size = rnd.randrange(256 << 10, 4 << 20)
            if n % 2:
                data, compressed = rnd.randbytes(size), compressed + size
            else:
                data, compressed = text(size), compressed + size // 3
            entries.append(im.file(f"opt{i}/blob{n}.bin", data, 0o755 if n % 5 == 0 else 0o644))
            n += 1
        out.append(im.Layer(entries, "gzip"))
    return im.build_image(out)


IMAGES = {"realistic": build_realistic_image, "legacy": build_bench_image}


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
async def private_containerd(workdir: Path, *, keep: bool = False) -> AsyncIterator[str]:
    """A containerd 1.6 of our own: root, state and socket under ``workdir`` (removed when it
    stops, unless ``keep``)."""
    root, state = workdir / "root", workdir / "state"
    root.mkdir(parents=True)
    state.mkdir(parents=True)
    sock = str(state / "containerd.sock")
    cfg = workdir / "config.toml"
    cfg.write_text(containerd_config(root, state, sock))
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
        await asyncio.to_thread(stop, proc, 20)
        # Overlay snapshots may still be mounted if containerd died badly.
        await asyncio.to_thread(subprocess.run, ["umount", "-R", str(root)], capture_output=True, check=False)
        if not keep:
            await asyncio.to_thread(shutil.rmtree, workdir, True)


async def run_containerd_pull(ref: str, runs: int, tmp: Path, latencies: list[float] | None = None) -> Runs:
    """``ctr pull`` against a private containerd; with ``latencies``, the same Version
    sampler as for arun runs alongside (same load on the machine, and containerd's own
    figure for comparison)."""
    from arun.benchmarks.arun_daemon import version_sampler

    out = Runs()
    for i in range(runs):
        async with private_containerd(tmp / f"containerd-{i}", keep=True) as sock:
            async with version_sampler(sock, interval=0.01) as samples:
                # Start every run with no dirty pages from the previous one.
                await asyncio.to_thread(os.sync)
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
            if latencies is not None:
                latencies.extend(samples)
    return out


async def _seed(reg: RegistryServer, img: im.BuiltImage) -> str:
    await im.push_raw(reg.url, "bench/big", "v1", img)
    return f"{reg.host}/bench/big:v1"


async def run_arun_pull(
    ref: str, runs: int, tmp: Path, pythonpath: str | None = None
) -> tuple[Runs, list[float]]:
    """Pull through a private arun daemon (``arun images pull``), sampling Version latency.
    ``pythonpath``: the daemon and the command of another tree (``--compare-src``)."""
    from arun.benchmarks.arun_daemon import private_arun, version_sampler

    out = Runs()
    latencies: list[float] = []
    for i in range(runs):
        async with private_arun(tmp / f"arun-{i}", keep=True, pythonpath=pythonpath) as sock:
            async with version_sampler(sock, interval=0.01) as samples:
                await asyncio.to_thread(os.sync)
                t0 = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "arun", "images", "-a", sock, "-n", "bench",
                    "pull", "--plain-http", "--quiet", ref,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                    env={
                        **os.environ,
                        "PYTHONPATH": pythonpath
                        if pythonpath is not None
                        else os.pathsep.join(p for p in sys.path if p),
                    },
                )  # fmt: skip
                _, err = await proc.communicate()
                dt = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"arun images pull failed: {err.decode()[-2000:]}")
            out.seconds.append(dt)
            latencies.extend(samples)
    return out, latencies


async def run_inprocess_pull(ref: str, runs: int, tmp: Path) -> tuple[Runs, list[float]]:
    """Pull in this process into arun's storage (local content store, overlayfs, walking
    differ; image record in memory), with a probe measuring event-loop lag every 10 ms."""
    from arun.content.local.store import LocalStore, MemoryLabelStore
    from arun.diff.walking import WalkingDiff
    from arun.remotes.client import RegistryClient
    from arun.remotes.hosts import HostsConfig
    from arun.snapshots.overlay import OverlaySnapshotter
    from arun.testing.memstores import Image, MemImages
    from arun.transfer.pull import pull
    from arun.transfer.stores import Stores

    out = Runs()
    lags: list[float] = []
    for i in range(runs):
        root = tmp / f"inproc-{i}"
        content = LocalStore(root / "content", MemoryLabelStore())
        sn = await OverlaySnapshotter.create(root / "snapshots")
        stores = Stores(
            content=content,
            images=MemImages(),
            make_image=lambda n, t, labels: Image(n, t, dict(labels)),
            snapshotter=sn,
            snapshotter_name="overlayfs",
            applier=WalkingDiff(content),
        )
        stop = asyncio.Event()

        async def probe(stop: asyncio.Event = stop) -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - t - 0.01)

        task = asyncio.create_task(probe())
        await asyncio.to_thread(os.sync)
        t0 = time.perf_counter()
        async with RegistryClient(HostsConfig(default_scheme="http")) as client:
            await pull(client, ref, stores)
        out.seconds.append(time.perf_counter() - t0)
        stop.set()
        await task
        await sn.close()
        await asyncio.to_thread(subprocess.run, ["umount", "-R", str(root)], capture_output=True, check=False)
    return out, lags


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def _pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def amain(args: argparse.Namespace) -> dict[str, object]:
    t0 = time.perf_counter()
    img = await asyncio.to_thread(IMAGES[args.image], args.mb, args.layers)
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
        "image": args.image,
        "layers": len(img.layers),
        "compressed_bytes": compressed,
        "uncompressed_bytes": uncompressed,
        "entries": files,
    }
    try:
        async with registry(tmp) as reg:
            ref = await _seed(reg, img)
            # Interleaved (containerd, arun, containerd, arun …): the machine is shared and
            # its disk noisy, so each pair sees about the same conditions.
            ctd, ip, ar, other = Runs(), Runs(), Runs(), Runs()
            lags: list[float] = []
            lat: list[float] = []
            clat: list[float] = []
            for i in range(args.runs):
                if not args.skip_containerd:
                    ctd.seconds += (await run_containerd_pull(ref, 1, tmp / f"c{i}", clat)).seconds
                if args.in_process:
                    r, lg = await run_inprocess_pull(ref, 1, tmp / f"p{i}")
                    ip.seconds += r.seconds
                    lags += lg
                if args.compare_src:
                    r, _ = await run_arun_pull(ref, 1, tmp / f"o{i}", pythonpath=args.compare_src)
                    other.seconds += r.seconds
                if not args.skip_arun:
                    r, lt = await run_arun_pull(ref, 1, tmp / f"a{i}")
                    ar.seconds += r.seconds
                    lat += lt
            if ctd.seconds:
                result["containerd_seconds"] = ctd.seconds
                result["containerd_version_p99_ms"] = _pct(clat, 99) * 1000
                print(
                    f"containerd 1.6 ctr pull: median {ctd.median:.2f}s {_fmt(ctd.seconds)}; "
                    f"its Version every 10 ms: p50 {_pct(clat, 50) * 1000:.1f} ms, "
                    f"p99 {_pct(clat, 99) * 1000:.1f} ms",
                    file=sys.stderr,
                )
            if ip.seconds:
                result["arun_inprocess_seconds"] = ip.seconds
                result["loop_lag_p99_ms"] = _pct(lags, 99) * 1000
                print(
                    f"arun in-process pull: median {ip.median:.2f}s {_fmt(ip.seconds)}; "
                    f"event-loop lag p50 {_pct(lags, 50) * 1000:.1f} ms, p99 {_pct(lags, 99) * 1000:.1f} ms",
                    file=sys.stderr,
                )
                if ctd.seconds:
                    result["inprocess_ratio"] = ip.median / ctd.median
                    print(
                        f"ratio arun (in-process)/containerd: {ip.median / ctd.median:.2f}", file=sys.stderr
                    )
            if other.seconds:
                result["compare_seconds"] = other.seconds
                print(
                    f"arun images pull ({args.compare_src}): "
                    f"median {other.median:.2f}s {_fmt(other.seconds)}",
                    file=sys.stderr,
                )
                if ctd.seconds:
                    result["compare_ratio"] = other.median / ctd.median
                    print(f"ratio compared tree/containerd: {other.median / ctd.median:.2f}", file=sys.stderr)
            if ar.seconds:
                result["arun_seconds"] = ar.seconds
                result["version_p50_ms"] = _pct(lat, 50) * 1000
                result["version_p99_ms"] = _pct(lat, 99) * 1000
                result["version_max_ms"] = max(lat) * 1000 if lat else float("nan")
                result["version_samples"] = len(lat)
                print(f"arun images pull: median {ar.median:.2f}s {_fmt(ar.seconds)}", file=sys.stderr)
                print(
                    f"Version every 10 ms during the pull: p50 {_pct(lat, 50) * 1000:.1f} ms, "
                    f"p99 {_pct(lat, 99) * 1000:.1f} ms ({len(lat)} calls; goal p99 <= 50 ms)",
                    file=sys.stderr,
                )
                if ctd.seconds:
                    result["ratio"] = ar.median / ctd.median
                    print(
                        f"ratio arun/containerd: {ar.median / ctd.median:.2f} (goal <= 1.0)", file=sys.stderr
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pull_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--mb", type=int, default=120, help="compressed size of the layers, about")
    p.add_argument(
        "--image",
        choices=sorted(IMAGES),
        default="realistic",
        help="realistic: ~8,000 files, ~2x compression (default); legacy: the first benchmark's "
        "image (~2,200 files, mostly incompressible)",
    )
    p.add_argument("--tmp", default=None, help="directory for registries and daemon roots")
    p.add_argument("--skip-containerd", action="store_true")
    p.add_argument("--skip-arun", action="store_true", help="skip the pull through an arun daemon")
    p.add_argument("--in-process", action="store_true", help="also pull in this process into arun's storage")
    p.add_argument(
        "--compare-src",
        default="",
        help="also pull with the arun of another tree (its src directory, e.g. a `git worktree` of "
        "main), interleaved with the others: before/after numbers from one run",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = p.parse_args(argv)
    result = asyncio.run(amain(args))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
