"""Pull against a real docker-registry, into the in-memory stores of arun.testing.memstores."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from arun import errdefs, platforms
from arun.images import mediatypes as mt
from arun.remotes.auth import StaticCredentials
from arun.remotes.client import ClientOptions, RegistryClient, RetryPolicy
from arun.remotes.hosts import HostsConfig
from arun.testing import images as im
from arun.testing.faultproxy import FaultProxy, Rule
from arun.testing.memstores import MemStores
from arun.testing.registry import RegistryServer, TokenAuth, registry
from arun.transfer.progress import Phase, Tracker
from arun.transfer.pull import PullOptions, pull

from .imagefixtures import rich_layers, two_platform_index

pytestmark = pytest.mark.registry

FAST = ClientOptions(retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02))
AMD64 = platforms.only(platforms.parse("linux/amd64"))


def client(**kw: object) -> RegistryClient:
    return RegistryClient(HostsConfig(default_scheme="http"), options=FAST, **kw)  # type: ignore[arg-type]


def assert_rootfs(ms: MemStores, chain_id: str, layers: list[im.Layer]) -> None:
    got = im.read_tree(ms.snapshotter.path(chain_id), owners=os.geteuid() == 0)
    want = im.expected_tree(layers)
    if os.geteuid() != 0:
        want = {k: im.Node(v.kind, v.mode, v.data, v.target) for k, v in want.items()}
    assert sorted(got) == sorted(want)
    for path, node in want.items():
        assert got[path] == node, path


async def test_pull_index_by_tag_unpacks_the_host_platform(reg: RegistryServer, tmp_path: Path) -> None:
    idx, amd, arm = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    ms = MemStores(str(tmp_path / "stores"))
    tracker = Tracker()
    ref = f"{reg.host}/lib/rich:v1"
    async with client() as c:
        res = await pull(c, ref, ms.stores(), PullOptions(platforms=AMD64, on_progress=tracker))
    # The record: named by the reference, pointing at the index.
    img = ms.images.images[ref]
    assert (img.target.digest, img.target.media_type, img.target.size) == (
        idx.digest,
        mt.OCI_INDEX,
        len(idx.index),
    )
    assert res.manifest.digest == amd.digest and res.config.digest == amd.config_digest
    chain = amd.chain_ids()
    assert res.chain_id == chain[-1]
    assert_rootfs(ms, chain[-1], amd.layers)
    # Only the chosen platform's blobs were fetched.
    assert set(res.fetched) == {idx.digest, amd.digest, amd.config_digest, *(la.digest for la in amd.layers)}
    assert arm.digest not in ms.content.blobs
    # containerd's labels.
    src = f"containerd.io/distribution.source.{reg.host}"
    labels = {d: ms.content.infos[d].labels for d in ms.content.infos}
    assert labels[idx.digest] == {"containerd.io/gc.ref.content.m.0": amd.digest, src: "lib/rich"}
    want_manifest = {
        "containerd.io/gc.ref.content.config": amd.config_digest,
        **{f"containerd.io/gc.ref.content.l.{i}": la.digest for i, la in enumerate(amd.layers)},
        src: "lib/rich",
    }
    assert labels[amd.digest] == want_manifest
    assert labels[amd.config_digest] == {src: "lib/rich", "containerd.io/gc.ref.snapshot.native": chain[-1]}
    for la in amd.layers:
        assert labels[la.digest] == {src: "lib/rich", "containerd.io/uncompressed": la.diff_id}
    # Snapshots named by chain ID, with their labels; no extraction snapshot left.
    assert sorted(ms.snapshotter.snaps) == sorted(chain)
    for i, cid in enumerate(chain):
        s = ms.snapshotter.snaps[cid]
        assert s.kind == "committed" and s.parent == (chain[i - 1] if i else "")
        assert s.labels["containerd.io/snapshot.ref"] == cid
    # The lease is gone; nothing half-made is left.
    assert ms.leases.created and not ms.leases.leases
    assert not ms.content.ingests
    # Progress: each layer downloaded, then unpacked; the image done last.
    assert tracker.phases(Phase.UNPACKED) == sorted(la.digest for la in amd.layers)
    assert tracker.events[-1].phase == Phase.DONE
    assert tracker.downloaded_bytes == sum(len(la.blob) for la in amd.layers) + len(amd.config) + len(
        amd.manifest
    ) + len(idx.index)


async def test_second_pull_downloads_nothing(reg: RegistryServer, tmp_path: Path) -> None:
    idx, amd, _ = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    ms = MemStores(str(tmp_path / "stores"))
    async with FaultProxy(reg.url) as proxy, client() as c:
        ref = f"{proxy.host}/lib/rich:v1"
        await pull(c, ref, ms.stores(), PullOptions(platforms=AMD64))
        gets = proxy.count("GET", "/v2/")
        assert gets == 3 + len(amd.layers)  # index, manifest, config, layers
        tracker = Tracker()
        written = ms.content.bytes_written
        res = await pull(c, ref, ms.stores(), PullOptions(platforms=AMD64, on_progress=tracker))
        assert res.fetched == [] and res.bytes_downloaded == 0
        assert proxy.count("GET", "/v2/") == gets  # no GET at all, only the HEAD of the tag
        assert ms.content.bytes_written == written
        assert not ms.applier.applied[len(amd.layers) :]
        assert tracker.phases(Phase.DOWNLOADING) == []


async def test_pull_by_digest_and_other_platform(reg: RegistryServer, tmp_path: Path) -> None:
    idx, amd, arm = two_platform_index("docker")
    await im.push_raw(reg.url, "lib/rich", None, idx)
    ms = MemStores(str(tmp_path / "stores"))
    async with client() as c:
        ref = f"{reg.host}/lib/rich@{idx.digest}"
        res = await pull(
            c, ref, ms.stores(), PullOptions(platforms=platforms.only(platforms.parse("linux/arm64")))
        )
        assert res.manifest.digest == arm.digest
        assert ms.images.images[ref].target.media_type == mt.DOCKER_MANIFEST_LIST
        assert_rootfs(ms, arm.chain_ids()[-1], arm.layers)
        # A manifest by digest (no index).
        ref2 = f"{reg.host}/lib/rich@{amd.digest}"
        res2 = await pull(c, ref2, ms.stores(), PullOptions(platforms=AMD64))
        assert res2.target.digest == amd.digest and res2.target.media_type == mt.DOCKER_MANIFEST
        assert_rootfs(ms, amd.chain_ids()[-1], amd.layers)


async def test_no_matching_platform(reg: RegistryServer, tmp_path: Path) -> None:
    idx, _, _ = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    ms = MemStores(str(tmp_path / "stores"))
    async with client() as c:
        with pytest.raises(errdefs.NotFoundError, match="no image for platform"):
            await pull(
                c,
                f"{reg.host}/lib/rich:v1",
                ms.stores(),
                PullOptions(platforms=platforms.only(platforms.parse("linux/s390x"))),
            )
    assert not ms.images.images


async def test_all_platforms_fetches_every_manifest(reg: RegistryServer, tmp_path: Path) -> None:
    idx, amd, arm = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    ms = MemStores(str(tmp_path / "stores"))
    async with client() as c:
        await pull(
            c, f"{reg.host}/lib/rich:v1", ms.stores(), PullOptions(platforms=AMD64, all_platforms=True)
        )
    assert {arm.digest, arm.layers[0].digest, amd.digest} <= set(ms.content.blobs)
    assert ms.content.infos[idx.digest].labels["containerd.io/gc.ref.content.m.1"] == arm.digest
    assert sorted(ms.snapshotter.snaps) == sorted(amd.chain_ids())  # only the host platform unpacked


async def test_layers_download_concurrently_and_unpack_while_downloading(
    reg: RegistryServer, tmp_path: Path
) -> None:
    layers = [im.Layer([im.dir_(f"d{i}"), im.file(f"d{i}/f", os.urandom(200_000))], "gzip") for i in range(6)]
    img = im.build_image(layers)
    await im.push_raw(reg.url, "lib/six", "v1", img)
    ms = MemStores(str(tmp_path / "stores"))
    tracker = Tracker()
    async with FaultProxy(reg.url) as proxy, client() as c:
        proxy.track("/blobs/sha256:")
        # The top layer is slow: the bottom layers must be unpacked before it arrives.
        proxy.add(Rule("delay", path=f"/blobs/{layers[-1].digest}", stall_for=1.0))
        for la in layers[:-1]:
            proxy.add(Rule("delay", path=f"/blobs/{la.digest}", stall_for=0.2))
        res = await pull(
            c,
            f"{proxy.host}/lib/six:v1",
            ms.stores(),
            PullOptions(max_concurrent_downloads=3, on_progress=tracker),
        )
        assert proxy.max_inflight["/blobs/sha256:"] == 3
    assert_rootfs(ms, res.chain_id, layers)
    order = [(e.phase, e.digest) for e in tracker.events if e.phase in (Phase.UNPACKED, Phase.DOWNLOADED)]
    assert order.index((Phase.UNPACKED, layers[0].digest)) < order.index(
        (Phase.DOWNLOADED, layers[-1].digest)
    )


async def test_auth_pull(tmp_path: Path) -> None:
    idx, amd, _ = two_platform_index()
    auth = TokenAuth(users={"alice": "pw"}, grants={"alice": ("pull", "push")})
    async with registry(tmp_path, auth=auth) as reg:
        assert reg.token_server is not None
        async with client(credentials=StaticCredentials({"*": ("alice", "pw")})) as c:
            # Seed through the registry's own token flow.
            tok = await c.authorizer._token(
                reg.host,
                __import__("arun.remotes.auth", fromlist=["_HostAuth"])._HostAuth(
                    "bearer",
                    realm=reg.token_server.realm,
                    service="arun-test-registry",
                    username="alice",
                    secret="pw",
                ),
                ("repository:app/rich:pull,push",),
            )
            await im.push_raw(reg.url, "app/rich", "v1", idx, headers={"Authorization": f"Bearer {tok}"})
            ms = MemStores(str(tmp_path / "ok"))
            res = await pull(c, f"{reg.host}/app/rich:v1", ms.stores(), PullOptions(platforms=AMD64))
            assert_rootfs(ms, res.chain_id, amd.layers)
        ms2 = MemStores(str(tmp_path / "denied"))
        async with client() as c:
            with pytest.raises(errdefs.UnauthenticatedError):
                await pull(c, f"{reg.host}/app/rich:v1", ms2.stores(), PullOptions(platforms=AMD64))
        assert not ms2.images.images and not ms2.content.blobs


async def test_mirror_sends_docker_io_to_the_local_registry(reg: RegistryServer, tmp_path: Path) -> None:
    img = im.build_image([im.busybox_layer()])
    await im.push_raw(reg.url, "library/busybox", "latest", img)
    d = tmp_path / "certs.d" / "docker.io"
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text(
        'server = "https://registry-1.docker.io"\n'
        f'[host."http://{reg.host}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    ms = MemStores(str(tmp_path / "stores"))
    async with RegistryClient(HostsConfig(config_path=[str(tmp_path / "certs.d")]), options=FAST) as c:
        res = await pull(c, "docker.io/library/busybox:latest", ms.stores())
    assert "docker.io/library/busybox:latest" in ms.images.images
    assert (
        ms.content.infos[img.digest].labels["containerd.io/distribution.source.docker.io"]
        == "library/busybox"
    )
    assert_rootfs(ms, res.chain_id, img.layers)


# -- bad input: a clear error, no image, nothing left after GC --------------------------------


async def expect_clean_failure(
    ms: MemStores, exc_type: type[BaseException], coro: object, match: str
) -> None:
    with pytest.raises(exc_type, match=match):
        await coro  # type: ignore[misc]
    assert not ms.images.images
    assert not ms.leases.leases
    await ms.gc()
    assert not ms.content.blobs, list(ms.content.infos)
    assert not ms.content.ingests
    assert not ms.snapshotter.snaps


@pytest.fixture
async def seeded(reg: RegistryServer) -> object:
    idx, amd, _arm = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    async with FaultProxy(reg.url) as proxy:
        yield proxy, idx, amd


async def test_bad_manifest_digest(
    seeded: tuple[FaultProxy, im.BuiltIndex, im.BuiltImage], tmp_path: Path
) -> None:
    proxy, _idx, amd = seeded
    bad = bytearray(amd.manifest)
    bad[-3] = ord("x") if bad[-3] != ord("x") else ord("y")
    proxy.add(Rule("replace", path=f"/manifests/{amd.digest}", body=bytes(bad), content_type=mt.OCI_MANIFEST))
    ms = MemStores(str(tmp_path / "s"))
    async with client() as c:
        await expect_clean_failure(
            ms,
            errdefs.FailedPreconditionError,
            pull(c, f"{proxy.host}/lib/rich:v1", ms.stores(), PullOptions(platforms=AMD64)),
            "digest mismatch",
        )


async def test_bad_blob_digest(
    seeded: tuple[FaultProxy, im.BuiltIndex, im.BuiltImage], tmp_path: Path
) -> None:
    proxy, _idx, amd = seeded
    la = amd.layers[2]
    bad = bytearray(la.blob)
    bad[len(bad) // 2] ^= 0x55
    proxy.add(
        Rule("replace", path=f"/blobs/{la.digest}", body=bytes(bad), content_type="application/octet-stream")
    )
    ms = MemStores(str(tmp_path / "s"))
    async with client() as c:
        await expect_clean_failure(
            ms,
            errdefs.FailedPreconditionError,
            pull(c, f"{proxy.host}/lib/rich:v1", ms.stores(), PullOptions(platforms=AMD64)),
            "unexpected commit digest",
        )


async def test_truncated_blob(
    seeded: tuple[FaultProxy, im.BuiltIndex, im.BuiltImage], tmp_path: Path
) -> None:
    proxy, _idx, amd = seeded
    la = amd.layers[0]
    proxy.add(
        Rule(
            "replace",
            path=f"/blobs/{la.digest}",
            body=la.blob[: len(la.blob) // 2],
            content_type="application/octet-stream",
        )
    )
    ms = MemStores(str(tmp_path / "s"))
    async with client() as c:
        await expect_clean_failure(
            ms,
            errdefs.FailedPreconditionError,
            pull(c, f"{proxy.host}/lib/rich:v1", ms.stores(), PullOptions(platforms=AMD64)),
            "size mismatch",
        )


async def test_unknown_layer_media_type(reg: RegistryServer, tmp_path: Path) -> None:
    layer = im.Layer([im.file("x", "y")], "gzip", media_type="application/vnd.example.layer.v1+weird")
    img = im.build_image([im.busybox_layer(), layer])
    await im.push_raw(reg.url, "lib/weird", "v1", img)
    ms = MemStores(str(tmp_path / "s"))
    async with client() as c:
        await expect_clean_failure(
            ms,
            errdefs.UnimplementedError,
            pull(c, f"{reg.host}/lib/weird:v1", ms.stores()),
            "unsupported media type",
        )


async def test_html_instead_of_manifest(
    seeded: tuple[FaultProxy, im.BuiltIndex, im.BuiltImage], tmp_path: Path
) -> None:
    proxy, _, _ = seeded
    page = b"<html><body>Welcome to our registry portal</body></html>"
    dg = "sha256:" + hashlib.sha256(page).hexdigest()
    proxy.add(
        Rule(
            "replace",
            method="*",
            path="/manifests/",
            body=page,
            content_type="text/html; charset=utf-8",
            headers={"Docker-Content-Digest": dg},
        )
    )
    ms = MemStores(str(tmp_path / "s"))
    async with client() as c:
        await expect_clean_failure(
            ms,
            errdefs.InvalidArgumentError,
            pull(c, f"{proxy.host}/lib/rich:v1", ms.stores()),
            "unsupported media type 'text/html'",
        )


async def test_oversized_manifest(
    seeded: tuple[FaultProxy, im.BuiltIndex, im.BuiltImage], tmp_path: Path
) -> None:
    proxy, _, _ = seeded
    huge = b'{"schemaVersion":2,"manifests":[]' + b" " * (5 << 20) + b"}"
    dg = "sha256:" + hashlib.sha256(huge).hexdigest()
    proxy.add(
        Rule(
            "replace",
            method="*",
            path="/manifests/v1",
            body=huge,
            content_type=mt.OCI_INDEX,
            headers={"Docker-Content-Digest": dg},
        )
    )
    ms = MemStores(str(tmp_path / "s"))
    async with client() as c:
        await expect_clean_failure(
            ms,
            errdefs.ResourceExhaustedError,
            pull(c, f"{proxy.host}/lib/rich:v1", ms.stores()),
            "byte manifest",
        )


async def test_registry_failing_forever(
    seeded: tuple[FaultProxy, im.BuiltIndex, im.BuiltImage], tmp_path: Path
) -> None:
    proxy, _, amd = seeded
    proxy.add(
        Rule(
            "status",
            path=f"/blobs/{amd.layers[3].digest}",
            status=500,
            body=b"<html>oops</html>",
            content_type="text/html",
        )
    )
    ms = MemStores(str(tmp_path / "s"))
    async with client() as c:
        await expect_clean_failure(
            ms,
            errdefs.UnavailableError,
            pull(c, f"{proxy.host}/lib/rich:v1", ms.stores(), PullOptions(platforms=AMD64)),
            "500",
        )


async def test_stalled_download(
    seeded: tuple[FaultProxy, im.BuiltIndex, im.BuiltImage], tmp_path: Path
) -> None:
    proxy, _, amd = seeded
    proxy.add(Rule("stall", path=f"/blobs/{amd.layers[0].digest}", after=10_000, stall_for=30))
    ms = MemStores(str(tmp_path / "s"))
    opts = ClientOptions(retry=FAST.retry, stall_timeout=0.5)
    async with RegistryClient(HostsConfig(default_scheme="http"), options=opts) as c:
        await expect_clean_failure(
            ms,
            errdefs.DeadlineExceededError,
            pull(c, f"{proxy.host}/lib/rich:v1", ms.stores(), PullOptions(platforms=AMD64)),
            "no data received",
        )


async def test_wrong_diff_id(reg: RegistryServer, tmp_path: Path) -> None:
    layers = rich_layers()[:2]
    img = im.build_image(layers)
    # A config that claims another diff ID for the second layer.
    import json

    cfg = json.loads(img.config)
    cfg["rootfs"]["diff_ids"][1] = "sha256:" + "e" * 64
    img.config = json.dumps(cfg).encode()
    man = json.loads(img.manifest)
    man["config"]["digest"], man["config"]["size"] = im.digest_of(img.config), len(img.config)
    img.manifest = json.dumps(man).encode()
    await im.push_raw(reg.url, "lib/lie", "v1", img)
    ms = MemStores(str(tmp_path / "s"))
    async with client() as c:
        await expect_clean_failure(
            ms,
            errdefs.FailedPreconditionError,
            pull(c, f"{reg.host}/lib/lie:v1", ms.stores()),
            "wrong diff id",
        )


async def test_layer_count_mismatch(reg: RegistryServer, tmp_path: Path) -> None:
    import json

    img = im.build_image(rich_layers()[:2])
    cfg = json.loads(img.config)
    cfg["rootfs"]["diff_ids"].pop()
    img.config = json.dumps(cfg).encode()
    man = json.loads(img.manifest)
    man["config"]["digest"], man["config"]["size"] = im.digest_of(img.config), len(img.config)
    img.manifest = json.dumps(man).encode()
    await im.push_raw(reg.url, "lib/lie", "v2", img)
    ms = MemStores(str(tmp_path / "s"))
    async with client() as c:
        await expect_clean_failure(
            ms,
            errdefs.InvalidArgumentError,
            pull(c, f"{reg.host}/lib/lie:v2", ms.stores()),
            "the config lists 1 layers",
        )
