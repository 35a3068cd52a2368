"""Pull into arun's real storage: the local content store, the native and overlayfs
snapshotters, and the walking differ (image and lease bookkeeping stay in memory)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from arun import errdefs, platforms
from arun.content.local.store import LocalStore, MemoryLabelStore
from arun.diff.walking import WalkingDiff
from arun.mount import temp_mount
from arun.remotes.client import ClientOptions, RegistryClient, RetryPolicy
from arun.remotes.hosts import HostsConfig
from arun.snapshots.native import NativeSnapshotter
from arun.testing import images as im
from arun.testing.faultproxy import FaultProxy, Rule
from arun.testing.memstores import Image, MemImages
from arun.testing.registry import RegistryServer
from arun.transfer.progress import Phase, Progress
from arun.transfer.pull import PullOptions, pull
from arun.transfer.stores import Stores

from .imagefixtures import two_platform_index

pytestmark = pytest.mark.registry
AMD64 = platforms.only(platforms.parse("linux/amd64"))


async def _snapshotter(kind: str, root: Path) -> Any:
    if kind == "native":
        return await NativeSnapshotter.create(root)
    from arun.snapshots.overlay import OverlaySnapshotter

    return await OverlaySnapshotter.create(root)


@pytest.fixture(params=["native", pytest.param("overlayfs", marks=pytest.mark.overlay)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    content = LocalStore(tmp_path / "content", MemoryLabelStore())
    sn = await _snapshotter(request.param, tmp_path / "snapshots")
    try:
        yield Stores(
            content=content,
            images=MemImages(),
            make_image=lambda n, t, labels: Image(n, t, dict(labels)),
            snapshotter=sn,
            snapshotter_name=request.param,
            applier=WalkingDiff(content),
        )
    finally:
        await sn.close()


async def rootfs(sn: Any, chain_id: str) -> dict[str, im.Node]:
    key = f"view-{os.urandom(4).hex()}"
    mounts = await sn.view(key, chain_id)
    try:
        async with temp_mount(mounts) as d:
            return im.read_tree(d, owners=os.geteuid() == 0)
    finally:
        await sn.remove(key)


async def test_pull_into_real_storage(reg: RegistryServer, stores: Stores) -> None:
    idx, amd, _ = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    ref = f"{reg.host}/lib/rich:v1"
    async with RegistryClient(HostsConfig(default_scheme="http")) as c:
        res = await pull(c, ref, stores, PullOptions(platforms=AMD64))
        again = await pull(c, ref, stores, PullOptions(platforms=AMD64))
    assert again.fetched == [] and again.bytes_downloaded == 0
    chain = amd.chain_ids()
    assert res.chain_id == chain[-1]
    info = await stores.snapshotter.stat(chain[-1])  # type: ignore[union-attr]
    assert info.parent == chain[-2] and info.labels["containerd.io/snapshot.ref"] == chain[-1]
    want = im.expected_tree(amd.layers)
    if os.geteuid() != 0:
        want = {k: im.Node(v.kind, v.mode, v.data, v.target) for k, v in want.items()}
    got = await rootfs(stores.snapshotter, chain[-1])
    assert sorted(got) == sorted(want)
    for path, node in want.items():
        assert got[path] == node, path
    for la in amd.layers:
        labels = (await stores.content.info(la.digest)).labels
        assert labels["containerd.io/uncompressed"] == la.diff_id


# -- a layer unpacked while it downloads -------------------------------------------------------

FAST = ClientOptions(retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02))


async def _snapshot_names(sn: Any) -> list[str]:
    return [info.name async for info in sn.walk()]


async def test_first_layer_is_unpacked_while_it_downloads(reg: RegistryServer, stores: Stores) -> None:
    """The registry stalls half-way through the base layer (then drops the connection, and
    the download resumes with a Range request): its extraction is already under way."""
    idx, amd, _ = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    la = amd.layers[0]
    events: list[Progress] = []
    async with FaultProxy(reg.url) as proxy:
        proxy.add(Rule("stall", path=f"/blobs/{la.digest}", times=1, after=len(la.blob) // 2, stall_for=2.0))
        async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as c:
            res = await pull(
                c,
                f"{proxy.host}/lib/rich:v1",
                stores,
                PullOptions(platforms=AMD64, on_progress=events.append),
            )
        assert any(r.path.endswith(la.digest) and "Range" in r.headers for r in proxy.requests)
    phases = [e.phase for e in events if e.digest == la.digest]
    assert Phase.UNPACKING in phases and Phase.DOWNLOADED in phases
    assert phases.index(Phase.UNPACKING) < phases.index(Phase.DOWNLOADED)
    assert res.chain_id == amd.chain_ids()[-1]
    want = im.expected_tree(amd.layers)
    if os.geteuid() != 0:
        want = {k: im.Node(v.kind, v.mode, v.data, v.target) for k, v in want.items()}
    got = await rootfs(stores.snapshotter, res.chain_id)
    assert sorted(got) == sorted(want)
    for path, node in want.items():
        assert got[path] == node, path


async def test_bad_bytes_found_while_unpacking_fail_as_a_digest_mismatch(
    reg: RegistryServer, stores: Stores
) -> None:
    """The base layer's second half is corrupt, and arrives after its extraction started:
    the pull fails with the download's digest error, leaves no snapshot, no blob, no ingest."""
    idx, amd, _ = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    la = amd.layers[0]
    bad = bytearray(la.blob)
    for i in range(len(bad) * 3 // 4, len(bad) - 10):
        bad[i] ^= 0x5A
    async with FaultProxy(reg.url) as proxy:
        # First request: the good first half, then a stall and a dropped connection; the
        # resumed request gets the corrupt blob (served whole, so the client skips to its offset).
        proxy.add(Rule("stall", path=f"/blobs/{la.digest}", times=1, after=len(la.blob) // 2, stall_for=1.0))
        proxy.add(
            Rule(
                "replace",
                path=f"/blobs/{la.digest}",
                body=bytes(bad),
                content_type="application/octet-stream",
            )
        )
        async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as c:
            with pytest.raises(errdefs.FailedPreconditionError, match="unexpected commit digest"):
                await pull(c, f"{proxy.host}/lib/rich:v1", stores, PullOptions(platforms=AMD64))
    assert not stores.images.images  # type: ignore[attr-defined]
    assert await _snapshot_names(stores.snapshotter) == []
    with pytest.raises(errdefs.NotFoundError):
        await stores.content.info(la.digest)
    assert await stores.content.list_statuses() == []  # type: ignore[attr-defined]
