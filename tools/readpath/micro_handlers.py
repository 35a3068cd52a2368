"""The read-only handlers of a create without gRPC: each servicer method called with a fake
stream, on uvloop, against a fresh metadata database and content store; prints µs per call
(best of 25 repeats of 400). Run once per tree (A then B, twice) to compare handler cost above grpclib:

    PYTHONPATH=/tmp/rp-base/src python tools/readpath/micro_handlers.py
    PYTHONPATH=src python tools/readpath/micro_handlers.py

``--miss`` drops the lookup cache before every call (what a lookup after a write pays).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from arun import namespaces
from arun.api.containerd.services.content.v1 import content_pb2
from arun.api.containerd.services.images.v1 import images_pb2
from arun.api.containerd.services.namespaces.v1 import namespace_pb2
from arun.content.local import LocalStore
from arun.core.content import Descriptor, digest_bytes
from arun.core.images import Image
from arun.metadata.content import SqlContentStore
from arun.metadata.db import Database
from arun.metadata.images import SqlImageStore
from arun.services.content.grpc import ContentServicer
from arun.services.content.local import ContentLocal
from arun.services.images.grpc import ImagesServicer
from arun.services.images.local import ImagesLocal
from arun.services.namespaces.grpc import NamespacesServicer
from arun.services.namespaces.local import NamespacesLocal


class Stream:
    def __init__(self, req: Any) -> None:
        self.req = req
        self.sent: list[Any] = []

    async def recv_message(self) -> Any:
        return self.req

    async def send_message(self, msg: Any) -> None:
        self.sent.append(msg)


async def main(miss: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = Database(Path(d) / "meta.db")
        await db.open()
        try:
            store = SqlContentStore(db, LocalStore(Path(d) / "content"))
            data = b'{"schemaVersion": 2, "config": {}}' * 20
            dgst = digest_bytes(data)
            labels = {f"containerd.io/gc.ref.content.m.{i}": "sha256:" + "a" * 64 for i in range(3)}
            with namespaces.use("bench"):
                w = await store.writer("r", total=len(data), expected=dgst)
                await w.write(data)
                await w.commit(len(data), dgst, labels=labels)
                images = SqlImageStore(db)
                await images.create(
                    Image("docker.io/library/x:1", Descriptor("application/json", dgst, len(data)))
                )
            content = ContentServicer(ContentLocal(store))
            calls = {
                "Namespaces.Get": (
                    NamespacesServicer(NamespacesLocal(db, None)).Get,
                    namespace_pb2.GetNamespaceRequest(name="bench"),
                ),
                "Images.Get": (
                    ImagesServicer(ImagesLocal(images)).Get,
                    images_pb2.GetImageRequest(name="docker.io/library/x:1"),
                ),
                "Content.Info": (content.Info, content_pb2.InfoRequest(digest=dgst)),
                "Content.Read": (content.Read, content_pb2.ReadContentRequest(digest=dgst)),
            }
            n = 400
            with namespaces.use("bench"):
                for name, (fn, req) in calls.items():
                    best = float("inf")
                    for _ in range(25):
                        t0 = time.perf_counter()
                        for _ in range(n):
                            if miss:
                                db._invalidate({"*"})
                            s = Stream(req)
                            await fn(s)
                            s.sent[0].SerializeToString()
                        best = min(best, (time.perf_counter() - t0) / n)
                    print(f"{name:16s} {best * 1e6:8.1f} us")
        finally:
            await db.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--miss", action="store_true")
    uvloop.run(main(ap.parse_args().miss))
