"""Cancelling a pull half-way leaves no extraction snapshot, no lease, no locked ingest."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from arun.remotes.client import RegistryClient
from arun.remotes.hosts import HostsConfig
from arun.testing import images as im
from arun.testing.faultproxy import FaultProxy, Rule
from arun.testing.memstores import MemStores
from arun.testing.registry import RegistryServer
from arun.transfer.progress import Phase, Progress
from arun.transfer.pull import PullOptions, pull

pytestmark = pytest.mark.registry


async def test_cancel_mid_pull(reg: RegistryServer, tmp_path: Path) -> None:
    layers = [im.Layer([im.dir_(f"d{i}"), im.file(f"d{i}/f", os.urandom(300_000))], "gzip") for i in range(4)]
    img = im.build_image(layers)
    await im.push_raw(reg.url, "lib/c", "v1", img)
    ms = MemStores(str(tmp_path / "s"))
    unpacked = asyncio.Event()

    def progress(ev: Progress) -> None:
        if ev.phase == Phase.UNPACKED:
            unpacked.set()

    async with FaultProxy(reg.url) as proxy, RegistryClient(HostsConfig(default_scheme="http")) as c:
        # The upper layers hang mid-body: the pull is cancelled while they stream.
        for la in layers[2:]:
            proxy.add(Rule("stall", path=f"/blobs/{la.digest}", after=50_000, stall_for=30))
        task = asyncio.create_task(
            pull(c, f"{proxy.host}/lib/c:v1", ms.stores(), PullOptions(on_progress=progress))
        )
        await asyncio.wait_for(unpacked.wait(), 10)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not ms.images.images
    assert not ms.leases.leases
    assert not [k for k in ms.snapshotter.snaps if k.startswith("extract-")]
    assert all(not ing.locked for ing in ms.content.ingests.values())
    # Partial ingests remain (resumable) until GC, which then removes everything.
    await ms.gc()
    assert not ms.content.blobs and not ms.content.ingests and not ms.snapshotter.snaps
