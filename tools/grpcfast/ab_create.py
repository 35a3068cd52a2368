"""Interleaved A/B: ``ctr containers create`` (and optionally N sequential unary calls from a Go
client, ``-g BINARY``) against two private arun daemons, one per source tree; prints medians as JSON.

    git -C /work/main archive HEAD src | tar -x -C /tmp/base
    PYTHONPATH=src python tools/grpcfast/ab_create.py /tmp/base/src src --rounds 10 --creates 10

``--hold`` keeps the daemons up and prints their sockets and pids (for py-spy) until stdin closes.
A tree given as ``NAME=VALUE@PATH`` runs its daemon with that environment variable set (one tree,
two variants: ``ARUN_GRPC_H2=h2@src src``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from ab_unary import cpu_ns

from arun.benchmarks import shim_bench as sb
from arun.benchmarks.reference import stop
from arun.testing.ociarchive import Entry, build_archive
from arun.testing.ociarchive import busybox_rootfs as layer

PIDS: dict[Path, int] = {}


@contextlib.contextmanager
def daemon(base: Path, src: str, level: str) -> Iterator[Path]:
    sock = base / "arun.sock"
    log = base / "arun.log"
    argv = [sys.executable, "-m", "arun", "daemon", "--root", str(base / "root")]
    argv += ["--state", str(base / "state"), "--address", str(sock), "-l", level]
    env = {**os.environ}
    if "@" in src:
        setting, src = src.split("@", 1)
        key, _, value = setting.partition("=")
        env[key] = value
    env["PYTHONPATH"] = src
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    PIDS[sock] = proc.pid
    try:
        sb._wait_socket(sock, proc, log)
        yield sock
    finally:
        stop(proc)


@contextlib.contextmanager
def daemons_with_image(
    base: Path, srcs: list[str], level: str, prefix: str
) -> Iterator[tuple[dict[str, Path], str]]:
    """A private daemon per source tree in ``base/A``, ``base/B``, … (its log: ``arun.log`` there),
    the benchmark image imported into the same fresh namespace ``<prefix>-XXXXXX`` of each;
    yields (sockets by name, namespace)."""
    archive = base / "image.tar"
    build_archive(archive, sb.IMAGE, [[*layer(), Entry("bin/sleep", "symlink", b"busybox")]])
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    with contextlib.ExitStack() as stack:
        socks: dict[str, Path] = {}
        for i, src in enumerate(srcs):
            name = chr(ord("A") + i)
            (base / name).mkdir()
            setting, at, path = src.rpartition("@")
            tree = setting + at + os.path.abspath(path)
            socks[name] = stack.enter_context(daemon(base / name, tree, level))
        for sock in socks.values():
            sb._ctr(sock, ns, "images", "import", str(archive))
        yield socks, ns


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("srcs", nargs="+")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--creates", type=int, default=10, help="ctr containers create per round and daemon")
    ap.add_argument("-g", "--grpcbench", help="Go client: sequential unary calls, prints p50 p90 in µs")
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--method", default="/containerd.services.version.v1.Version/Version")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--hold", action="store_true")
    args = ap.parse_args()
    with sb.workdir() as base, daemons_with_image(base, args.srcs, args.log_level, "gf") as (socks, ns):
        names = list(socks)
        if args.hold:
            print(json.dumps({"socks": {k: str(v) for k, v in socks.items()}, "ns": ns}), flush=True)
            sys.stdin.read()
            return
        create: dict[str, list[float]] = {n: [] for n in names}
        create_cpu: dict[str, list[float]] = {n: [] for n in names}
        calls: dict[str, list[float]] = {n: [] for n in names}
        calls_cpu: dict[str, list[float]] = {n: [] for n in names}
        cycle_cpu: dict[str, list[float]] = {n: [] for n in names}
        counter = 0
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, s in socks.items():
                pid = PIDS[s]
                if args.grpcbench:
                    c0 = cpu_ns(pid)
                    got = subprocess.run(
                        [args.grpcbench, "-a", str(s), "-n", str(args.calls), "-m", args.method, "-ns", ns],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout.split()
                    if r:
                        calls[name].append(float(got[0]))
                        calls_cpu[name].append((cpu_ns(pid) - c0) / 1000 / (args.calls + 50))
                for _ in range(args.creates):
                    counter += 1
                    c0 = cpu_ns(pid)
                    t0 = time.perf_counter()
                    sb._ctr(s, ns, "containers", "create", sb.IMAGE, f"c{counter}", "sleep", "1")
                    if r:
                        create[name].append((time.perf_counter() - t0) * 1000)
                        create_cpu[name].append((cpu_ns(pid) - c0) / 1e6)
                    sb._ctr(s, ns, "containers", "rm", f"c{counter}")
                    if r:
                        cycle_cpu[name].append((cpu_ns(pid) - c0) / 1e6)

        def med(xs: list[float], digits: int) -> float | None:
            return round(statistics.median(xs), digits) if xs else None

        out = {
            n: {
                "create_p50_ms": med(create[n], 1),
                "daemon_cpu_ms_per_create": med(create_cpu[n], 2),
                # the whole create + rm, with the garbage collection wherever it lands
                "daemon_cpu_ms_per_create_and_rm_mean": round(statistics.mean(cycle_cpu[n]), 2)
                if cycle_cpu[n]
                else None,
                "unary_p50_us_median_of_rounds": med(calls[n], 0),
                "daemon_cpu_us_per_unary": med(calls_cpu[n], 1),
            }
            for n in names
        }
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
