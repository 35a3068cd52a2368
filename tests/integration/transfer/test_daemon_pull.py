"""Pull and push through a real arun daemon: ``arun images pull|push`` (the transfer
service), Debian's ``ctr`` 1.6 pulling and pushing client-side through arun's content,
images, snapshots and diff services, daemon-side mirrors and credentials, and bad input
leaving nothing after GC."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from arun.testing import images as im
from arun.testing.daemon import Daemon
from arun.testing.faultproxy import FaultProxy, Rule
from arun.testing.registry import RegistryServer, TokenAuth, registry

from .imagefixtures import two_platform_index

pytestmark = [pytest.mark.integration, pytest.mark.registry, pytest.mark.ctr, pytest.mark.overlay]


def rows(output: str) -> list[list[str]]:
    lines = [line for line in output.splitlines() if line.strip()]
    return [line.split() for line in lines[1:]]


def arun_images(
    d: Daemon, *args: str, namespace: str = "default", check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "arun", "images", "-a", str(d.address), "-n", namespace, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=d.env, timeout=120, check=False)
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout}\n{r.stderr}\n{d.logs()[-3000:]}"
        )
    return r


async def arun_images_t(
    d: Daemon, *args: str, namespace: str = "default", check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``arun_images`` off the loop (a FaultProxy in this process must keep serving)."""
    return await asyncio.to_thread(arun_images, d, *args, namespace=namespace, check=check)


def gc(d: Daemon, namespace: str = "default") -> None:
    """Run a full garbage collection now (deleting a lease synchronously does)."""
    lid = f"gc-{time.time_ns()}"
    d.ctr("leases", "create", "--id", lid, namespace=namespace)
    d.ctr("leases", "delete", "--sync", lid, namespace=namespace)


async def test_arun_images_pull_then_again_downloads_nothing(
    reg: RegistryServer, daemon_factory: Callable[..., Daemon]
) -> None:
    idx, amd, _ = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    d = daemon_factory()
    async with FaultProxy(reg.url) as proxy:
        ref = f"{proxy.host}/lib/rich:v1"
        out = await arun_images_t(d, "pull", "--plain-http", ref)
        assert out.stdout.strip() == ref
        assert "Completed pull from" in out.stderr
        images = {r[0]: r for r in rows(d.ctr("images", "ls").stdout)}
        assert images[ref][1] == "application/vnd.oci.image.index.v1+json" and images[ref][2] == idx.digest
        snaps = {r[0] for r in rows(d.ctr("snapshots", "--snapshotter", "overlayfs", "ls").stdout)}
        assert set(amd.chain_ids()) <= snaps
        labels = {r[0]: r[-1] for r in rows(d.ctr("content", "ls").stdout)}
        assert f"containerd.io/uncompressed={amd.layers[0].diff_id}" in labels[amd.layers[0].digest]
        assert f"containerd.io/gc.ref.snapshot.overlayfs={amd.chain_ids()[-1]}" in labels[amd.config_digest]
        assert not rows(d.ctr("leases", "ls").stdout)
        gets = proxy.count("GET", "/v2/")
        await arun_images_t(d, "pull", "--plain-http", ref)
        assert proxy.count("GET", "/v2/") == gets
        # Everything the image needs survives a GC.
        gc(d)
        assert set(amd.chain_ids()) <= {r[0] for r in rows(d.ctr("snapshots", "ls").stdout)}
        assert amd.layers[0].digest in {r[0] for r in rows(d.ctr("content", "ls").stdout)}


async def test_arun_images_pull_platform_flag(
    reg: RegistryServer, daemon_factory: Callable[..., Daemon]
) -> None:
    """``arun images pull --platform`` reaches the daemon's pull: the other platform's manifest of
    the index is fetched and unpacked, and nothing of the host's."""
    idx, amd, arm = two_platform_index()
    await im.push_raw(reg.url, "lib/multi", "v1", idx)
    d = daemon_factory()
    ref = f"{reg.host}/lib/multi:v1"
    await arun_images_t(d, "pull", "--plain-http", "--platform", "linux/arm64/v8", ref, namespace="arm")
    images = {r[0]: r[2] for r in rows(d.ctr("images", "ls", namespace="arm").stdout)}
    assert images == {ref: idx.digest}
    snaps = {r[0] for r in rows(d.ctr("snapshots", "ls", namespace="arm").stdout)}
    assert snaps == set(arm.chain_ids())
    blobs = {r[0] for r in rows(d.ctr("content", "ls", namespace="arm").stdout)}
    assert {arm.digest, arm.config_digest, *(x.digest for x in arm.layers)} <= blobs
    assert not {amd.config_digest, *(x.digest for x in amd.layers)} & blobs
    # a platform the index does not have is a clear NOT_FOUND-style error and records nothing
    r = await arun_images_t(
        d, "pull", "--plain-http", "--platform", "linux/s390x", ref, namespace="s390", check=False
    )
    assert r.returncode == 1 and "s390x" in r.stderr, r.stderr
    assert rows(d.ctr("images", "ls", namespace="s390").stdout) == []


async def test_ctr_pull_and_push_through_arun(
    reg: RegistryServer, daemon_factory: Callable[..., Daemon]
) -> None:
    img = im.build_image([im.busybox_layer(), im.Layer([im.dir_("etc"), im.file("etc/x", "y")], "zstd")])
    await im.push_raw(reg.url, "lib/bb", "v1", img)
    d = daemon_factory()
    ref = f"{reg.host}/lib/bb:v1"
    # containerd 1.6's ctr pulls on the client side, through arun's services, and unpacks.
    d.ctr("images", "pull", "--plain-http", ref, timeout=120)
    assert {r[0] for r in rows(d.ctr("images", "ls").stdout)} == {ref}
    assert set(img.chain_ids()) <= {r[0] for r in rows(d.ctr("snapshots", "ls").stdout)}
    # ctr pushes from arun's content store; arun pulls it back into another namespace.
    d.ctr("images", "tag", ref, f"{reg.host}/copy/bb:v2")
    d.ctr("images", "push", "--plain-http", f"{reg.host}/copy/bb:v2", timeout=120)
    await arun_images_t(d, "pull", "--plain-http", f"{reg.host}/copy/bb:v2", namespace="back")
    back = {r[0]: r[2] for r in rows(d.ctr("images", "ls", namespace="back").stdout)}
    assert back[f"{reg.host}/copy/bb:v2"] == img.digest
    # And arun images push, under a third name.
    await arun_images_t(
        d, "push", "--plain-http", f"{reg.host}/third/bb:v3", f"{reg.host}/copy/bb:v2", namespace="back"
    )
    await arun_images_t(d, "pull", "--plain-http", f"{reg.host}/third/bb:v3", namespace="third")
    third = {r[0]: r[2] for r in rows(d.ctr("images", "ls", namespace="third").stdout)}
    assert third[f"{reg.host}/third/bb:v3"] == img.digest


async def test_daemon_mirror_and_credentials(tmp_path: Path, daemon_factory: Callable[..., Daemon]) -> None:
    img = im.build_image([im.busybox_layer()])
    auth = TokenAuth(users={"alice": "pw"}, grants={"alice": ("pull", "push")})
    async with registry(tmp_path / "r", auth=auth) as reg:
        certs = tmp_path / "certs.d"
        (certs / "docker.io").mkdir(parents=True)
        (certs / "docker.io" / "hosts.toml").write_text(
            'server = "https://registry-1.docker.io"\n'
            f'[host."http://{reg.host}"]\n  capabilities = ["pull", "resolve", "push"]\n'
        )
        d = daemon_factory(
            config_text=(
                f'version = 2\n[plugins."io.containerd.transfer.v1.local"]\n  config_path = "{certs}"\n'
            )
        )
        # Seed the registry through the daemon: pull from a plain registry, push with credentials.
        async with registry(tmp_path / "plain") as plain:
            await im.push_raw(plain.url, "library/busybox", "latest", img)
            await arun_images_t(d, "pull", "--plain-http", f"{plain.host}/library/busybox:latest")
            await arun_images_t(
                d, "push", "--user", "alice:pw", "busybox:latest", f"{plain.host}/library/busybox:latest"
            )
        # Short name, docker.io → the mirror from hosts.toml; no credentials → refused.
        r = await arun_images_t(d, "pull", "busybox", namespace="n2", check=False)
        assert r.returncode == 1 and "UnauthenticatedError" in r.stderr
        await arun_images_t(d, "pull", "--user", "alice:pw", "busybox", namespace="n2")
        got = {x[0]: x[2] for x in rows(d.ctr("images", "ls", namespace="n2").stdout)}
        assert got["docker.io/library/busybox:latest"] == img.digest


async def test_bad_blob_leaves_nothing_after_gc(
    reg: RegistryServer, daemon_factory: Callable[..., Daemon]
) -> None:
    idx, amd, _ = two_platform_index()
    await im.push_raw(reg.url, "lib/rich", "v1", idx)
    d = daemon_factory()
    async with FaultProxy(reg.url) as proxy:
        la = amd.layers[3]
        bad = bytearray(la.blob)
        bad[100] ^= 1
        proxy.add(Rule("replace", path=f"/blobs/{la.digest}", body=bytes(bad)))
        r = await arun_images_t(d, "pull", "--plain-http", f"{proxy.host}/lib/rich:v1", check=False)
        assert r.returncode == 1 and "FailedPreconditionError" in r.stderr and la.digest in r.stderr, (
            r.stderr + d.logs()[-4000:]
        )
        # An HTML page instead of a manifest.
        page = b"<html>portal</html>"
        proxy.add(
            Rule(
                "replace",
                method="*",
                path="/manifests/",
                body=page,
                content_type="text/html",
                headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(page).hexdigest()},
            )
        )
        r = await arun_images_t(d, "pull", "--plain-http", f"{proxy.host}/lib/rich:v2", check=False)
        assert r.returncode == 1 and "text/html" in r.stderr
    assert not rows(d.ctr("images", "ls").stdout)
    assert not rows(d.ctr("leases", "ls").stdout)
    gc(d)
    assert not rows(d.ctr("content", "ls").stdout)
    assert not rows(d.ctr("snapshots", "ls").stdout)
