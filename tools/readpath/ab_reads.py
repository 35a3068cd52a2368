"""Interleaved A/B of the read-only RPCs ``ctr containers create`` makes (Namespaces.Get,
Images.Get, Content.Info + Content.Read of every blob of the image, Snapshots.Stat of its top
layer), against one private arun daemon per source tree; prints, per RPC, the median daemon CPU
per call (µs, all threads, from schedstat) and the median client-side latency (µs).

    git -C /work/main archive main src | tar -x -C /tmp/rp-base
    PYTHONPATH=src python tools/readpath/ab_reads.py /tmp/rp-base/src src --rounds 8 --calls 200

The client is grpclib in this process (its CPU is not counted). ``--hold`` keeps the daemons up
and prints their pids (for py-spy) while a loop of all the calls runs until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "grpcfast"))

import ab_create
from google.protobuf import empty_pb2
from grpclib.client import Channel

from arun.api.containerd.services.content.v1 import content_grpc, content_pb2
from arun.api.containerd.services.images.v1 import images_grpc, images_pb2
from arun.api.containerd.services.namespaces.v1 import namespace_grpc, namespace_pb2
from arun.api.containerd.services.snapshots.v1 import snapshots_grpc, snapshots_pb2
from arun.api.containerd.services.version.v1 import version_grpc
from arun.benchmarks import shim_bench as sb


def chain_id(diff_ids: list[str]) -> str:
    cur = diff_ids[0]
    for d in diff_ids[1:]:
        cur = "sha256:" + hashlib.sha256(f"{cur} {d}".encode()).hexdigest()
    return cur


async def plan(ch: Channel, ns: str) -> list[tuple[str, object, object]]:
    """(label, stub method, request) of every read-only call of a create."""
    md = {"containerd-namespace": ns}
    images = images_grpc.ImagesStub(ch)
    content = content_grpc.ContentStub(ch)
    img = (await images.Get(images_pb2.GetImageRequest(name=sb.IMAGE), metadata=md)).image
    calls: list[tuple[str, object, object]] = [
        ("Version (floor)", version_grpc.VersionStub(ch).Version, empty_pb2.Empty()),
        ("Namespaces.Get", namespace_grpc.NamespacesStub(ch).Get, namespace_pb2.GetNamespaceRequest(name=ns)),
        ("Images.Get", images.Get, images_pb2.GetImageRequest(name=sb.IMAGE)),
    ]
    todo = [img.target.digest]
    diff_ids: list[str] = []
    first = True
    while todo:
        d = todo.pop(0)
        if first:
            calls.append(("Content.Info", content.Info, content_pb2.InfoRequest(digest=d)))
            calls.append(("Content.Read", content.Read, content_pb2.ReadContentRequest(digest=d)))
            first = False
        data = b"".join(
            [r.data for r in await content.Read(content_pb2.ReadContentRequest(digest=d), metadata=md)]
        )
        doc = json.loads(data)
        todo += [m["digest"] for m in doc.get("manifests", [])]
        if "digest" in (doc.get("config") or {}):
            todo.append(doc["config"]["digest"])
        diff_ids = doc.get("rootfs", {}).get("diff_ids", diff_ids)
    calls.append(
        (
            "Snapshots.Stat",
            snapshots_grpc.SnapshotsStub(ch).Stat,
            snapshots_pb2.StatSnapshotRequest(snapshotter="overlayfs", key=chain_id(diff_ids)),
        )
    )
    return calls


async def run(socks: dict[str, Path], pids: dict[str, int], ns: str, rounds: int, n: int, hold: bool) -> None:
    chans = {k: Channel(path=str(s)) for k, s in socks.items()}
    md = {"containerd-namespace": ns}
    plans = {k: await plan(c, ns) for k, c in chans.items()}
    cpu: dict[tuple[str, str], list[float]] = {}
    lat: dict[tuple[str, str], list[float]] = {}
    try:
        for r in range(rounds + 1):
            for k in chans:
                for label, method, req in plans[k]:
                    c0 = ab_create.cpu_ns(pids[k])
                    ts = []
                    for _ in range(n):
                        t0 = time.perf_counter()
                        await method(req, metadata=md)  # type: ignore[operator]
                        ts.append(time.perf_counter() - t0)
                    if r:
                        cpu.setdefault((k, label), []).append((ab_create.cpu_ns(pids[k]) - c0) / 1000 / n)
                        lat.setdefault((k, label), []).append(statistics.median(ts) * 1e6)
            if hold:
                print("round", r, flush=True)
        out: dict[str, dict[str, list[float]]] = {}
        for (k, label), xs in cpu.items():
            out.setdefault(label, {})[k] = [
                round(statistics.median(xs), 1),
                round(statistics.median(lat[(k, label)]), 1),
            ]
        print("rpc: {tree: [daemon cpu us/call, client p50 us]}")
        for label, v in out.items():
            print(f"{label:16s} {json.dumps(v)}")
    finally:
        for c in chans.values():
            c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("srcs", nargs="+")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--hold", action="store_true", help="print pids, then loop many rounds")
    args = ap.parse_args()
    with (
        sb.workdir() as base,
        ab_create.daemons_with_image(base, args.srcs, args.log_level, "rp") as (socks, ns),
    ):
        pids = {k: ab_create.PIDS[s] for k, s in socks.items()}
        if args.hold:
            print(json.dumps({"pids": pids}), flush=True)
        asyncio.run(run(socks, pids, ns, args.rounds, args.calls, args.hold))


if __name__ == "__main__":
    main()
