"""Unpack benchmark: a multi-layer image of many small files, unpacked by arun and by containerd.

Not a test. ``python -m arun.benchmarks.unpack_bench --help``.

* ``build_image`` writes a deterministic OCI image archive (``image.tar``) of
  ``layers`` tar+gzip layers totalling ``size_mb`` MiB uncompressed, mostly
  small files, with directories, symlinks, hard links, modified files and
  whiteouts (plain and opaque) in the upper layers. It is cached by its
  parameters.
* ``run_arun`` does what containerd's importer does with arun's pieces: the
  blobs go into a ``LocalStore`` (ingest), then each layer is applied by the
  walking differ onto an overlayfs snapshot prepared on the previous one and
  committed under its chain ID (unpack). A probe task measures how late the
  event loop wakes up meanwhile (the loop-lag percentiles).
* ``run_containerd`` starts a private containerd 1.6 (own root, state,
  socket; CRI disabled), times ``ctr images import`` of the same archive
  with and without ``--no-unpack`` (two fresh daemons), stops it and removes
  everything it created.
* ``run_daemons`` (``--ctr``) is the end-to-end comparison: ``ctr images
  import`` of the same archive into a fresh private arun daemon and a fresh
  private containerd, interleaved (arun, containerd, containerd, arun, ...),
  with and without ``--no-unpack``; it reports medians and their ratios.

Both sides need root (overlayfs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import stat
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from arun.benchmarks.reference import containerd_config, stop
from arun.content.local import LocalStore
from arun.core import mediatypes
from arun.core.content import Descriptor
from arun.diff.walking import WalkingDiff
from arun.mount import LinuxMounter
from arun.snapshots.overlay import OverlaySnapshotter

__all__ = ["ImageSet", "build_image", "main", "run_arun", "run_containerd"]

IMAGE_NAME = "docker.io/library/arunbench:latest"


@dataclass
class Layer:
    path: Path  # the compressed blob
    digest: str  # of the compressed blob
    size: int
    diff_id: str
    uncompressed_size: int
    files: int


@dataclass
class ImageSet:
    dir: Path
    archive: Path  # OCI image archive for ``ctr images import``
    layers: list[Layer] = field(default_factory=list)

    @property
    def uncompressed_size(self) -> int:
        return sum(x.uncompressed_size for x in self.layers)

    @property
    def files(self) -> int:
        return sum(x.files for x in self.layers)


# ---------------------------------------------------------------- building the image


class _Content:
    """Deterministic file contents, about half random and half text (compresses roughly 2:1)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.noise = rng.randbytes(4 << 20)
        words = [
            b"lorem",
            b"ipsum",
            b"container",
            b"layer",
            b"runtime",
            b"python",
            b"overlay",
            b"\n",
            b"=",
            b"/",
        ]
        self.text = b" ".join(rng.choice(words) for _ in range(900_000))[: 4 << 20]

    def make(self, n: int) -> bytes:
        half = n // 2
        a = self.rng.randrange(0, len(self.noise) - half)
        b = self.rng.randrange(0, len(self.text) - (n - half))
        return self.noise[a : a + half] + self.text[b : b + n - half]

    def size(self) -> int:
        # Mostly small files: about 9 KiB on average, as in common distribution images.
        r = self.rng.random()
        if r < 0.70:
            return self.rng.randint(100, 2048)
        if r < 0.95:
            return self.rng.randint(2048, 16 * 1024)
        if r < 0.995:
            return self.rng.randint(16 * 1024, 128 * 1024)
        return self.rng.randint(128 * 1024, 1 << 20)


def _layer_entries(
    idx: int, budget: int, content: _Content, previous: list[list[str]]
) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    rng = content.rng
    used = 0
    seen_dirs: set[str] = set()

    def ti(name: str, type_: bytes, mode: int) -> tarfile.TarInfo:
        t = tarfile.TarInfo(name)
        t.type = type_
        t.mode = mode
        t.mtime = 1_700_000_000 + idx
        t.uname = t.gname = ""
        return t

    def dirs_of(path: str) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in seen_dirs:
                seen_dirs.add(d)
                yield ti(d + "/", tarfile.DIRTYPE, 0o755), b""

    if idx > 0 and previous:
        # Upper layers change earlier ones: whiteouts, an opaque directory, rewritten files.
        older = [p for layer in previous for p in layer]
        for victim in rng.sample(older, min(200, len(older))):
            d, _, base = victim.rpartition("/")
            yield from dirs_of(victim)
            yield ti(f"{d}/.wh.{base}", tarfile.REGTYPE, 0o644), b""
        opaque_dir = previous[0][0].rpartition("/")[0]
        yield from dirs_of(opaque_dir + "/x")
        yield ti(f"{opaque_dir}/.wh..wh..opq", tarfile.REGTYPE, 0o644), b""
        for path in rng.sample(older, min(300, len(older))):
            data = content.make(content.size())
            yield from dirs_of(path)
            t = ti(path, tarfile.REGTYPE, 0o644)
            t.size = len(data)
            used += len(data)
            yield t, data

    files: list[str] = []
    n = 0
    while used < budget:
        pkg = f"usr/lib/pkg{idx}-{n // 400}"
        sub = rng.choice(["", "bin/", "share/doc/", "lib/python3/site-packages/mod/", "etc/"])
        path = f"{pkg}/{sub}file-{n}.dat"
        n += 1
        data = content.make(content.size())
        yield from dirs_of(path)
        t = ti(path, tarfile.REGTYPE, rng.choice([0o644, 0o755, 0o600]))
        t.size = len(data)
        used += len(data)
        files.append(path)
        yield t, data
        if n % 97 == 0:
            link = ti(path + ".link", tarfile.SYMTYPE, 0o777)
            link.linkname = os.path.basename(path)
            yield link, b""
        if n % 211 == 0:
            h = ti(path + ".hard", tarfile.LNKTYPE, t.mode)
            h.linkname = path
            yield h, b""
    previous.append(files)


def _write_layer(path: Path, entries: Iterator[tuple[tarfile.TarInfo, bytes]]) -> Layer:
    """Write one tar+gzip layer, hashing both sides in one pass."""
    raw_h = hashlib.sha256()
    blob_h = hashlib.sha256()
    counts = {"raw": 0, "blob": 0, "files": 0}
    comp = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with open(path, "wb") as out:

        class Sink(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, b: bytes) -> int:  # type: ignore[override]
                raw_h.update(b)
                counts["raw"] += len(b)
                z = comp.compress(bytes(b))
                if z:
                    blob_h.update(z)
                    counts["blob"] += len(z)
                    out.write(z)
                return len(b)

        sink = Sink()
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tw:
            for t, data in entries:
                tw.addfile(t, io.BytesIO(data) if t.type == tarfile.REGTYPE else None)
                counts["files"] += 1
        tail = comp.flush()
        blob_h.update(tail)
        counts["blob"] += len(tail)
        out.write(tail)
    return Layer(
        path,
        f"sha256:{blob_h.hexdigest()}",
        counts["blob"],
        f"sha256:{raw_h.hexdigest()}",
        counts["raw"],
        counts["files"],
    )


def build_image(
    workdir: str | os.PathLike[str], *, size_mb: int = 128, layers: int = 4, seed: int = 1
) -> ImageSet:
    """Build (or reuse) the benchmark image under ``workdir``."""
    d = Path(workdir) / f"image-{size_mb}m-{layers}l-s{seed}"
    meta = d / "layers.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        return ImageSet(d, d / "image.tar", [Layer(Path(x.pop("path")), **x) for x in info])
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    rng = random.Random(seed)
    content = _Content(rng)
    # Bottom layers are bigger, as in real images.
    weights = [2 ** (layers - i) for i in range(layers)]
    budgets = [size_mb * (1 << 20) * w // sum(weights) for w in weights]
    previous: list[list[str]] = []
    img = ImageSet(d, d / "image.tar")
    for i, budget in enumerate(budgets):
        tmp = d / f"layer-{i}.tar.gz"
        layer = _write_layer(tmp, _layer_entries(i, budget, content, previous))
        final = d / f"{layer.digest.split(':')[1]}"
        tmp.rename(final)
        layer.path = final
        img.layers.append(layer)

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in img.layers]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": _sha(config), "size": len(config)},
            "layers": [
                {"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": x.digest, "size": x.size}
                for x in img.layers
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mediatypes.OCI_MANIFEST,
                    "digest": _sha(manifest),
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": IMAGE_NAME,
                        "org.opencontainers.image.ref.name": "latest",
                    },
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    with tarfile.open(img.archive, "w") as tw:
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)):
            _add_bytes(tw, name, data)
        for data in (config, manifest):
            _add_bytes(tw, "blobs/sha256/" + _sha(data).split(":")[1], data)
        for x in img.layers:
            tw.add(x.path, "blobs/sha256/" + x.digest.split(":")[1])
    meta.write_text(json.dumps([{**asdict(x), "path": str(x.path)} for x in img.layers]))
    return img


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add_bytes(tw: tarfile.TarFile, name: str, data: bytes) -> None:
    t = tarfile.TarInfo(name)
    t.size = len(data)
    t.mode = 0o644
    tw.addfile(t, io.BytesIO(data))


# ---------------------------------------------------------------- arun


class _LoopProbe:
    """Wakes every ``interval`` s and records how late it woke (loop lag)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lags.append(time.perf_counter() - t - self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        lags = sorted(self.lags) or [0.0]
        return {
            "samples": len(self.lags),
            "p50_ms": 1000 * statistics.median(lags),
            "p99_ms": 1000 * lags[min(len(lags) - 1, int(len(lags) * 0.99))],
            "max_ms": 1000 * lags[-1],
        }


def _chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else _sha(f"{out[-1]} {d}".encode()))
    return out


async def run_arun(img: ImageSet, root: str | os.PathLike[str]) -> dict[str, object]:
    """Ingest the layers into a fresh arun content store and unpack them onto overlay snapshots."""
    root = Path(root)
    store = LocalStore(root / "content")
    sn = await OverlaySnapshotter.create(root / "snapshots")
    differ = WalkingDiff(store, tmp_root=str(root))
    probe = _LoopProbe()
    probe.start()
    try:
        t0 = time.perf_counter()
        for x in img.layers:
            w = await store.writer(f"ingest-{x.digest}", total=x.size, expected=x.digest)
            with open(x.path, "rb", buffering=0) as f:  # noqa: ASYNC230 - chunks are read in a thread below
                while chunk := await asyncio.to_thread(f.read, 1 << 20):
                    await w.write(chunk)
            await w.commit(x.size, x.digest)
        t1 = time.perf_counter()
        parent = ""
        for x, chain in zip(img.layers, _chain_ids([x.diff_id for x in img.layers]), strict=True):
            key = f"extract-{time.time_ns()} {chain}"
            mounts = await sn.prepare(key, parent)
            applied = await differ.apply(Descriptor(mediatypes.OCI_LAYER_GZIP, x.digest, x.size), mounts)
            if applied.digest != x.diff_id:
                raise RuntimeError(f"diffID mismatch for {x.digest}: {applied.digest} != {x.diff_id}")
            await sn.commit(chain, key)
            parent = chain
        t2 = time.perf_counter()
    finally:
        lag = await probe.stop()
        await sn.close()
    prints = await asyncio.to_thread(snapshot_fingerprints, root / "snapshots" / "snapshots")
    return {
        "ingest_s": t1 - t0,
        "unpack_s": t2 - t1,
        "total_s": t2 - t0,
        "loop_lag": lag,
        "fingerprints": prints,
    }


# ---------------------------------------------------------------- containerd


@contextlib.contextmanager
def _containerd(workdir: Path) -> Iterator[str]:
    """A private containerd on its own root/state/socket; stopped and removed afterwards."""
    root, state = workdir / "root", workdir / "state"
    root.mkdir(parents=True)
    state.mkdir(parents=True)
    sock = str(state / "containerd.sock")
    cfg = workdir / "config.toml"
    cfg.write_text(containerd_config(root, state, sock))
    log = open(workdir / "containerd.log", "wb")
    proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start; see {workdir / 'containerd.log'}")
            time.sleep(0.05)
        yield sock
    finally:
        stop(proc, 15)
        log.close()
        _unmount_under(workdir)


def _unmount_under(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f if line.split()[4].startswith(prefix)]
    m = LinuxMounter()
    for t in sorted(targets, key=len, reverse=True):
        m.unmount(t, 2)


def _ctr_import(sock: str, archive: Path, *, unpack: bool) -> float:
    cmd = ["ctr", "-a", sock, "-n", "bench", "images", "import", "--base-name", IMAGE_NAME.rsplit(":", 1)[0]]
    if not unpack:
        cmd.append("--no-unpack")
    t = time.perf_counter()
    proc = subprocess.run([*cmd, str(archive)], capture_output=True, text=True, check=False)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"ctr import failed: {proc.stderr.strip()}")
    return took


def snapshot_fingerprints(snapshots_dir: Path) -> list[str]:
    """One digest per snapshot (in id order) of its ``fs`` tree: names, types, modes, owners,
    sizes, contents, link targets, device numbers, overlay xattrs and file mtimes."""
    out = []
    ids = sorted(int(n) for n in os.listdir(snapshots_dir) if n.isdigit())
    for sid in ids:
        root = snapshots_dir / str(sid) / "fs"
        h = hashlib.sha256()
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(dirs + files):
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                rel = os.path.relpath(p, root)
                extra = b""
                if stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        extra = hashlib.sha256(f.read()).digest()
                elif stat.S_ISLNK(st.st_mode):
                    extra = os.fsencode(os.readlink(p))
                with contextlib.suppress(OSError):
                    extra += os.getxattr(p, "trusted.overlay.opaque", follow_symlinks=False)
                # Directory and whiteout times are "when it was unpacked" on both sides.
                whiteout = stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
                mtime = 0 if stat.S_ISDIR(st.st_mode) or whiteout else st.st_mtime_ns
                fields = (rel, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_rdev, mtime)
                h.update(repr(fields).encode() + extra)
        out.append(h.hexdigest()[:16])
    return out


def run_containerd(img: ImageSet, workdir: str | os.PathLike[str]) -> dict[str, object]:
    """Time ``ctr images import`` (with and without unpacking) against private containerd daemons."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        raise RuntimeError("containerd/ctr not installed")
    out: dict[str, object] = {}
    for unpack in (False, True):
        wd = Path(tempfile.mkdtemp(prefix="ctrd-", dir=workdir))
        try:
            with _containerd(wd) as sock:
                took = _ctr_import(sock, img.archive, unpack=unpack)
                out["import_s" if unpack else "import_no_unpack_s"] = took
                if unpack:
                    snaps = wd / "root" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
                    out["fingerprints"] = snapshot_fingerprints(snaps)
        finally:
            _unmount_under(wd)
            shutil.rmtree(wd, ignore_errors=True)
    out["unpack_s"] = float(out["import_s"]) - float(out["import_no_unpack_s"])  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------- arun daemon vs containerd, both via ctr


async def _arun_import(img: ImageSet, workdir: Path, *, unpack: bool) -> tuple[float, list[str]]:
    from arun.benchmarks.arun_daemon import private_arun

    wd = Path(tempfile.mkdtemp(prefix="arund-", dir=workdir))
    async with private_arun(wd) as sock:
        took = await asyncio.to_thread(_ctr_import, sock, img.archive, unpack=unpack)
        prints: list[str] = []
        if unpack:
            snaps = wd / "root" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
            prints = await asyncio.to_thread(snapshot_fingerprints, snaps)
    return took, prints


def _containerd_import(img: ImageSet, workdir: Path, *, unpack: bool) -> tuple[float, list[str]]:
    wd = Path(tempfile.mkdtemp(prefix="ctrd-", dir=workdir))
    try:
        with _containerd(wd) as sock:
            took = _ctr_import(sock, img.archive, unpack=unpack)
            prints: list[str] = []
            if unpack:
                prints = snapshot_fingerprints(
                    wd / "root" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
                )
    finally:
        _unmount_under(wd)
        shutil.rmtree(wd, ignore_errors=True)
    return took, prints


def run_daemons(img: ImageSet, workdir: str | os.PathLike[str], runs: int) -> dict[str, object]:
    """``ctr images import`` into fresh arun and containerd daemons, A B B A interleaved; medians."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        raise RuntimeError("containerd/ctr not installed")
    wd = Path(workdir)
    times: dict[str, list[float]] = {
        "arun": [],
        "arun_no_unpack": [],
        "containerd": [],
        "containerd_no_unpack": [],
    }
    prints: dict[str, list[str]] = {}
    for i in range(runs):
        sides = ["arun", "containerd"] if i % 2 == 0 else ["containerd", "arun"]
        for unpack in (True, False):
            for side in sides:
                if side == "arun":
                    took, fp = asyncio.run(_arun_import(img, wd, unpack=unpack))
                else:
                    took, fp = _containerd_import(img, wd, unpack=unpack)
                times[side if unpack else f"{side}_no_unpack"].append(took)
                what = "import" if unpack else "import --no-unpack"
                print(f"  round {i + 1}: {side:10} {what:18} {took:7.2f} s", file=sys.stderr, flush=True)
                if fp:
                    prints[side] = fp
    med = {k: statistics.median(v) for k, v in times.items()}
    unpack_a = med["arun"] - med["arun_no_unpack"]
    unpack_c = med["containerd"] - med["containerd_no_unpack"]
    return {
        "runs": runs,
        "samples_s": times,
        "median_s": med,
        "ratio_import": round(med["arun"] / med["containerd"], 2),
        "ratio_unpack": round(unpack_a / unpack_c, 2) if unpack_c > 0 else None,
        "unpack_s": {"arun": unpack_a, "containerd": unpack_c},
        "same_trees": prints.get("arun") == prints.get("containerd"),
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--workdir", default="/var/tmp/arun-bench", help="image cache and scratch space")
    ap.add_argument("--size-mb", type=int, default=128, help="uncompressed size of all layers")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1, help="repeat each side and report the best")
    ap.add_argument("--no-containerd", action="store_true", help="only run arun")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--ctr",
        action="store_true",
        help="also compare `ctr images import` into a private arun daemon and a private containerd "
        "(interleaved, --runs rounds, medians)",
    )
    ap.add_argument("--ctr-only", action="store_true", help="run only the --ctr comparison")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("unpack_bench needs root (overlayfs)", file=sys.stderr)
        return 2
    os.makedirs(args.workdir, exist_ok=True)
    t = time.perf_counter()
    img = build_image(args.workdir, size_mb=args.size_mb, layers=args.layers, seed=args.seed)
    result: dict[str, object] = {
        "image": {
            "layers": len(img.layers),
            "entries": img.files,
            "uncompressed_mb": round(img.uncompressed_size / (1 << 20), 1),
            "compressed_mb": round(sum(x.size for x in img.layers) / (1 << 20), 1),
            "build_s": round(time.perf_counter() - t, 2),
        }
    }
    if args.ctr_only:
        result["ctr_import"] = run_daemons(img, args.workdir, max(args.runs, 1))
        if args.json:
            print(json.dumps(result, indent=2, default=float))
        else:
            _report(result)
        return 0
    arun_runs = []
    for _ in range(args.runs):
        d = tempfile.mkdtemp(prefix="arun-", dir=args.workdir)
        try:
            arun_runs.append(asyncio.run(run_arun(img, d)))
        finally:
            _unmount_under(Path(d))
            shutil.rmtree(d, ignore_errors=True)
    best = min(arun_runs, key=lambda r: float(r["unpack_s"]))  # type: ignore[arg-type]
    result["arun"] = best
    if not args.no_containerd:
        runs = [run_containerd(img, args.workdir) for _ in range(args.runs)]
        ctr = min(runs, key=lambda r: float(r["unpack_s"]))  # type: ignore[arg-type]
        result["containerd"] = ctr
        result["ratio_unpack"] = round(float(best["unpack_s"]) / float(ctr["unpack_s"]), 2)  # type: ignore[arg-type]
        result["same_trees"] = best["fingerprints"] == ctr["fingerprints"]
        result["ratio_total"] = round(float(best["total_s"]) / float(ctr["import_s"]), 2)  # type: ignore[arg-type]
    if args.ctr:
        result["ctr_import"] = run_daemons(img, args.workdir, max(args.runs, 1))
    if args.json:
        print(json.dumps(result, indent=2, default=float))
    else:
        _report(result)
    return 0


def _report(r: dict[str, object]) -> None:
    im = r["image"]
    assert isinstance(im, dict)
    print(
        f"image: {im['layers']} layers, {im['entries']} tar entries, "
        f"{im['uncompressed_mb']} MiB uncompressed / {im['compressed_mb']} MiB gzip"
    )
    a = r.get("arun")
    if not isinstance(a, dict):
        _report_ctr(r)
        return
    lag = a["loop_lag"]
    print(
        f"arun:       ingest {a['ingest_s']:.2f} s  unpack {a['unpack_s']:.2f} s  total {a['total_s']:.2f} s"
    )
    print(
        f"            event-loop lag during the run: p50 {lag['p50_ms']:.1f} ms  p99 {lag['p99_ms']:.1f} ms"
        f"  max {lag['max_ms']:.1f} ms ({lag['samples']} samples)"
    )
    c = r.get("containerd")
    if isinstance(c, dict):
        print(
            f"containerd: import --no-unpack {c['import_no_unpack_s']:.2f} s  import {c['import_s']:.2f} s"
            f"  → unpack ≈ {c['unpack_s']:.2f} s"
        )
        print(f"ratio arun/containerd: unpack {r['ratio_unpack']}x  total {r['ratio_total']}x")
        same = r["same_trees"]
        print(f"unpacked snapshot trees identical to containerd's: {same}")
        if not same:
            print(f"  arun:       {a['fingerprints']}\n  containerd: {c['fingerprints']}")
    _report_ctr(r)


def _report_ctr(r: dict[str, object]) -> None:
    d = r.get("ctr_import")
    if isinstance(d, dict):
        med = d["median_s"]
        u = d["unpack_s"]
        print(f"ctr images import into each daemon, medians of {d['runs']} interleaved runs:")
        print(
            f"  arun:       import {med['arun']:.2f} s  --no-unpack {med['arun_no_unpack']:.2f} s"
            f"  → unpack ≈ {u['arun']:.2f} s"
        )
        print(
            f"  containerd: import {med['containerd']:.2f} s  --no-unpack {med['containerd_no_unpack']:.2f} s"
            f"  → unpack ≈ {u['containerd']:.2f} s"
        )
        print(f"  ratio arun/containerd: import {d['ratio_import']}x  unpack {d['ratio_unpack']}x")
        print(f"  unpacked snapshot trees identical: {d['same_trees']}")


if __name__ == "__main__":
    sys.exit(main())
