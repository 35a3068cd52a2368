"""Push from the content store to a real docker-registry, and pull back."""

from __future__ import annotations

from pathlib import Path

import pytest

from arun import errdefs, platforms
from arun.remotes.auth import StaticCredentials
from arun.remotes.client import ClientOptions, RegistryClient, RetryPolicy
from arun.remotes.hosts import HostsConfig
from arun.testing import images as im
from arun.testing.faultproxy import FaultProxy
from arun.testing.memstores import MemStores
from arun.testing.registry import RegistryServer, TokenAuth, registry
from arun.transfer.progress import Phase, Tracker
from arun.transfer.pull import PullOptions, pull
from arun.transfer.push import PushOptions, push

from .imagefixtures import two_platform_index

pytestmark = pytest.mark.registry

FAST = ClientOptions(retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02))
AMD64 = platforms.only(platforms.parse("linux/amd64"))


def client(**kw: object) -> RegistryClient:
    return RegistryClient(HostsConfig(default_scheme="http"), options=FAST, **kw)  # type: ignore[arg-type]


async def test_push_to_new_name_mounts_and_round_trips(reg: RegistryServer, tmp_path: Path) -> None:
    idx, amd, arm = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    src = MemStores(str(tmp_path / "src"))
    async with FaultProxy(reg.url) as proxy, client() as c:
        pulled = await pull(c, f"{proxy.host}/lib/rich:v1", src.stores(), PullOptions(all_platforms=True))
        tracker = Tracker()
        res = await push(
            c, f"{proxy.host}/mirror/rich:v2", src.content, pulled.target, PushOptions(on_progress=tracker)
        )
        # Every blob came from lib/rich by a cross-repository mount; only manifests were sent.
        blobs = {amd.config_digest, arm.config_digest, *(la.digest for la in amd.layers + arm.layers)}
        assert set(res.mounted) == blobs
        assert set(res.uploaded) == {idx.digest, amd.digest, arm.digest}
        assert proxy.count("POST", "/v2/mirror/rich/blobs/uploads/", lambda r: "mount=" in r.query) == len(
            blobs
        )
        assert proxy.count("PATCH", "/v2/mirror/rich/") == 0
        assert tracker.phases(Phase.MOUNTED) == sorted(blobs)
        # The source labels now name both repositories.
        key = f"containerd.io/distribution.source.{proxy.host}"
        assert src.content.infos[amd.layers[0].digest].labels[key] == "lib/rich,mirror/rich"
        # Pushing again sends nothing.
        again = await push(c, f"{proxy.host}/mirror/rich:v2", src.content, pulled.target)
        assert set(again.existing) == blobs and not again.mounted
        # Pull back into an empty store: identical, digest for digest.
        back = MemStores(str(tmp_path / "back"))
        res2 = await pull(c, f"{proxy.host}/mirror/rich:v2", back.stores(), PullOptions(all_platforms=True))
        assert res2.target.digest == idx.digest
        assert set(back.content.blobs) == set(src.content.blobs)
        for d, data in src.content.blobs.items():
            assert back.content.blobs[d] == data


async def test_push_chunked_to_another_registry(reg: RegistryServer, tmp_path: Path) -> None:
    idx, amd, _ = two_platform_index("docker")
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    src = MemStores(str(tmp_path / "src"))
    async with client() as c:
        pulled = await pull(c, f"{reg.host}/lib/rich:v1", src.stores(), PullOptions(platforms=AMD64))
        async with registry(tmp_path) as other, FaultProxy(other.url) as proxy:
            # Only the amd64 manifest is here: push that one (by its manifest digest).
            with pytest.raises(errdefs.NotFoundError, match="not in the content store"):
                await push(c, f"{proxy.host}/copy/rich:v1", src.content, pulled.target)
            res = await push(
                c,
                f"{proxy.host}/copy/rich:v1",
                src.content,
                pulled.manifest,
                PushOptions(chunk_size=64 << 10),
            )
            assert set(res.uploaded) >= {amd.digest, *(la.digest for la in amd.layers)}
            big = max(len(la.blob) for la in amd.layers)
            assert proxy.count("PATCH", "/v2/copy/rich/blobs/uploads/") >= big // (64 << 10)
            back = MemStores(str(tmp_path / "back"))
            res2 = await pull(c, f"{proxy.host}/copy/rich:v1", back.stores(), PullOptions(platforms=AMD64))
            assert res2.target.digest == amd.digest
            assert back.content.blobs[amd.layers[0].digest] == amd.layers[0].blob


async def test_push_with_token_auth(tmp_path: Path) -> None:
    img = im.build_image([im.busybox_layer("zstd")])
    async with registry(tmp_path / "plain") as plain:
        await im.push_raw(plain.url, "lib/bb", "v1", img)
        src = MemStores(str(tmp_path / "src"))
        async with client() as c:
            pulled = await pull(c, f"{plain.host}/lib/bb:v1", src.stores())
    auth = TokenAuth(users={"alice": "pw"}, grants={"alice": ("pull", "push"), "": ("pull",)})
    async with registry(tmp_path / "auth", auth=auth) as reg:
        async with client() as anon:
            with pytest.raises(errdefs.UnauthenticatedError):
                await push(anon, f"{reg.host}/team/bb:v1", src.content, pulled.target)
        async with client(credentials=StaticCredentials({"*": ("alice", "pw")})) as c:
            res = await push(c, f"{reg.host}/team/bb:v1", src.content, pulled.target)
            assert img.layers[0].digest in res.uploaded
        back = MemStores(str(tmp_path / "back"))
        async with client() as anon:
            res2 = await pull(anon, f"{reg.host}/team/bb:v1", back.stores())
        assert res2.target.digest == img.digest
