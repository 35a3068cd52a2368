"""Time collect_metadata on a populated database (no backends)."""

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from arun import namespaces
from arun.content.local import LocalStore
from arun.core import typeurl
from arun.core.containers import Container, RuntimeInfo
from arun.core.content import digest_bytes
from arun.metadata import gc
from arun.metadata.db import Database
from arun.metadata.meta import Metadata
from arun.testing.snapshotter import MemorySnapshotter


async def main():
    with tempfile.TemporaryDirectory() as d:
        db = Database(Path(d) / "meta.db")
        await db.open()
        m = Metadata(db, content=LocalStore(Path(d) / "c"), snapshotters={"overlayfs": MemorySnapshotter()})
        with namespaces.use("bench"):
            cs = m.content_store()
            for i in range(30):
                data = f"blob{i}".encode()
                dg = digest_bytes(data)
                w = await cs.writer(f"r{i}")
                await w.write(data)
                await w.commit(
                    len(data),
                    dg,
                    labels={
                        "containerd.io/gc.root": "1",
                        "containerd.io/distribution.source.docker.io": "library/x",
                    },
                )
            sn = m.snapshotter("overlayfs")
            await sn.prepare("l0-x")
            await sn.commit("l0", "l0-x", labels={"containerd.io/gc.root": "1"})
            spec = typeurl.Any("spec", b"{" + b'"x":1,' * 2000 + b"}")
            for i in range(int(sys.argv[1])):
                await sn.prepare(f"c{i}", "l0", labels={"containerd.io/snapshot.ref": "x", "a": "b"})
                await m.containers.create(
                    Container(
                        f"c{i}",
                        labels={"io.containerd.image.config.stop-signal": "SIGTERM", "nerdctl/x": "y"},
                        runtime=RuntimeInfo("io.containerd.runc.v2"),
                        spec=spec,
                        snapshotter="overlayfs",
                        snapshot_key=f"c{i}",
                        image="docker.io/library/x:latest",
                    )
                )
        import cProfile
        import pstats

        if len(sys.argv) > 2:
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(20):
                await gc.collect_metadata(db, m.hooks)
            pr.disable()
            pstats.Stats(pr).sort_stats("tottime").print_stats(14)
        ts = []
        for _ in range(40):
            t = time.perf_counter()
            await gc.collect_metadata(db, m.hooks)
            ts.append((time.perf_counter() - t) * 1000)
        print(f"collect_metadata p50 {statistics.median(ts):.2f} ms (min {min(ts):.2f})")
        await db.close()


asyncio.run(main())
