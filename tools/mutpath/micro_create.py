"""The metadata side of `ctr containers create` without gRPC: Leases.Create, Snapshots.Prepare
(overlay backend), Snapshots.Mounts, Containers.Create, Leases.Delete, median µs each.

    PYTHONPATH=src python tools/mutpath/micro_create.py
"""

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from arun import leasectx, namespaces
from arun.core import typeurl
from arun.core.containers import Container, RuntimeInfo
from arun.metadata.db import Database
from arun.metadata.meta import Metadata
from arun.snapshots.overlay import OverlaySnapshotter


async def main():
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        db = Database(Path(d) / "meta.db")
        await db.open()
        ov = OverlaySnapshotter(Path(d) / "ov") if len(sys.argv) < 2 else None
        await ov._init()
        m = Metadata(db, snapshotters={"overlayfs": ov})
        spec = typeurl.Any(
            "types.containerd.io/opencontainers/runtime-spec/1/Spec", b"{" + b'"x":1,' * 600 + b"}"
        )
        res = {"lease": [], "prepare": [], "mounts": [], "create": [], "ldel": []}
        with namespaces.use("bench"):
            sn = m.snapshotter("overlayfs")
            await sn.prepare("base-x")
            await sn.commit("base", "base-x")
            for i in range(150):
                t0 = time.perf_counter()
                await m.leases.create(f"l{i}")
                t1 = time.perf_counter()
                with leasectx.use(f"l{i}"):
                    await sn.prepare(f"c{i}", "base", labels={"containerd.io/gc.root": "x"})
                t2 = time.perf_counter()
                await sn.mounts(f"c{i}")
                t3 = time.perf_counter()
                await m.containers.create(
                    Container(
                        f"c{i}",
                        labels={"io.containerd.image.config.stop-signal": "SIGTERM"},
                        runtime=RuntimeInfo("io.containerd.runc.v2"),
                        spec=spec,
                        snapshotter="overlayfs",
                        snapshot_key=f"c{i}",
                        image="docker.io/library/x:latest",
                    )
                )
                t4 = time.perf_counter()
                await m.leases.delete(f"l{i}")
                t5 = time.perf_counter()
                if i >= 10:
                    for k, a, b in (
                        ("lease", t0, t1),
                        ("prepare", t1, t2),
                        ("mounts", t2, t3),
                        ("create", t3, t4),
                        ("ldel", t4, t5),
                    ):
                        res[k].append((b - a) * 1e6)
        print(" ".join(f"{k} {statistics.median(v):.0f}us" for k, v in res.items()))
        await db.close()
        await ov.close()


asyncio.run(main())
