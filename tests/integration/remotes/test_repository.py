"""The registry client against a real docker-registry on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from pathlib import Path

import pytest

from arun import errdefs
from arun.images import mediatypes as mt
from arun.images.manifest import Descriptor, parse_index
from arun.remotes.auth import StaticCredentials
from arun.remotes.client import ClientOptions, RegistryClient, RetryPolicy
from arun.remotes.hosts import HostsConfig
from arun.remotes.repository import Repository
from arun.testing import images as im
from arun.testing.faultproxy import FaultProxy, Rule
from arun.testing.registry import HtpasswdAuth, RegistryServer, TokenAuth, registry

pytestmark = pytest.mark.registry

FAST = ClientOptions(retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02))


def small_image(flavour: im.Flavour = "oci") -> im.BuiltImage:
    return im.build_image(
        [
            im.Layer([im.dir_("etc"), im.file("etc/a", "one" * 1000)], "gzip"),
            im.Layer([im.file("etc/b", random.Random(1).randbytes(100_000))], "zstd"),
        ],
        flavour=flavour,
    )


async def blob(repo: Repository, desc: Descriptor, offset: int = 0) -> bytes:
    async with contextlib.aclosing(repo.iter_blob(desc, offset)) as it:
        return b"".join([c async for c in it])


def layer_desc(img: im.BuiltImage, i: int) -> Descriptor:
    d = img.layers[i].descriptor(img.flavour)
    return Descriptor(d["mediaType"], d["digest"], d["size"])


async def test_resolve_and_fetch_by_tag_and_digest(reg: RegistryServer) -> None:
    img = small_image()
    other = im.build_image([im.busybox_layer("none")], architecture="arm64")
    idx = im.build_index([img, other])
    await im.push_raw(reg.url, "app/x", "v1", idx)
    await im.push_raw(reg.url, "app/docker", "v1", small_image("docker"))
    async with RegistryClient(HostsConfig(default_scheme="http")) as client:
        repo = client.repository(f"{reg.host}/app/x:v1")
        desc = await repo.resolve()
        assert (desc.media_type, desc.digest, desc.size) == (mt.OCI_INDEX, idx.digest, len(idx.index))
        body = await repo.fetch_bytes(desc)
        assert body == idx.index
        index = parse_index(body, desc.media_type)
        assert [m.digest for m in index.manifests] == [img.digest, other.digest]
        by_digest = await client.repository(f"{reg.host}/app/x@{img.digest}").resolve()
        assert (by_digest.media_type, by_digest.size) == (mt.OCI_MANIFEST, len(img.manifest))
        assert await blob(repo, layer_desc(img, 1)) == img.layers[1].blob
        # Resume from an offset with a Range request.
        assert await blob(repo, layer_desc(img, 1), 1000) == img.layers[1].blob[1000:]
        ddesc = await client.repository(f"{reg.host}/app/docker:v1").resolve()
        assert ddesc.media_type == mt.DOCKER_MANIFEST


async def test_not_found(reg: RegistryServer) -> None:
    await im.push_raw(reg.url, "app/x", "v1", small_image())
    async with RegistryClient(HostsConfig(default_scheme="http")) as client:
        with pytest.raises(errdefs.NotFoundError):
            await client.repository(f"{reg.host}/app/x:nope").resolve()
        with pytest.raises(errdefs.NotFoundError):
            await client.repository(f"{reg.host}/no/such:v1").resolve()
        missing = Descriptor(mt.OCI_LAYER_GZIP, "sha256:" + "1" * 64, 10)
        with pytest.raises(errdefs.NotFoundError):
            await blob(client.repository(f"{reg.host}/app/x:v1"), missing)


async def test_localhost_defaults_to_https_then_plain_http(reg: RegistryServer) -> None:
    img = small_image()
    await im.push_raw(reg.url, "app/x", "v1", img)
    async with RegistryClient() as client:  # no --plain-http: containerd's localhost rule applies
        desc = await client.repository(f"{reg.host}/app/x:v1").resolve()
        assert desc.digest == img.digest


async def test_unreachable_registry_is_unavailable() -> None:
    from arun.testing.registry import free_port

    async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as client:
        with pytest.raises(errdefs.UnavailableError):
            await client.repository(f"127.0.0.1:{free_port()}/a:b").resolve()


async def test_basic_auth(tmp_path: Path) -> None:
    img = small_image()
    async with registry(tmp_path, auth=HtpasswdAuth({"alice": "s3cret"})) as reg:
        hdr = {"Authorization": "Basic " + __import__("base64").b64encode(b"alice:s3cret").decode()}
        await im.push_raw(reg.url, "app/x", "v1", img, headers=hdr)
        cfg = HostsConfig(default_scheme="http")
        async with RegistryClient(
            cfg, credentials=StaticCredentials({reg.host: ("alice", "s3cret")})
        ) as client:
            repo = client.repository(f"{reg.host}/app/x:v1")
            assert (await repo.resolve()).digest == img.digest
            assert await blob(repo, layer_desc(img, 0)) == img.layers[0].blob
        async with RegistryClient(cfg) as client:
            with pytest.raises(errdefs.UnauthenticatedError, match="no credentials"):
                await client.repository(f"{reg.host}/app/x:v1").resolve()
        async with RegistryClient(cfg, credentials=StaticCredentials({"*": ("alice", "wrong")})) as client:
            with pytest.raises(errdefs.UnauthenticatedError, match="credentials refused"):
                await client.repository(f"{reg.host}/app/x:v1").resolve()


async def test_token_auth(tmp_path: Path) -> None:
    img = small_image()
    auth = TokenAuth(
        users={"bob": "pw"},
        grants={"bob": ("pull", "push")},
        refresh_tokens={"refresh-123": "bob"},
    )
    async with registry(tmp_path, auth=auth) as reg:
        cfg = HostsConfig(default_scheme="http")
        bob = StaticCredentials({reg.host: ("bob", "pw")})
        ts = reg.token_server
        assert ts is not None
        async with RegistryClient(cfg, credentials=bob) as client:
            repo = client.repository(f"{reg.host}/app/x:v1")
            # Seed with our own upload calls, authenticated through the token flow.
            for layer in img.layers:
                d = layer_desc(img, img.layers.index(layer))

                async def chunks(data: bytes = layer.blob) -> object:
                    yield data

                await repo.upload_blob(d, chunks)  # type: ignore[arg-type]
            cfg_desc = Descriptor(im.OCI_CONFIG, img.config_digest, len(img.config))

            async def cfg_chunks() -> object:
                yield img.config

            await repo.upload_blob(cfg_desc, cfg_chunks)  # type: ignore[arg-type]
            await repo.put_manifest(
                "v1", Descriptor(mt.OCI_MANIFEST, img.digest, len(img.manifest)), img.manifest
            )
            before = len(ts.requests)
            desc = await repo.resolve()
            assert desc.digest == img.digest
            assert await blob(repo, layer_desc(img, 0)) == img.layers[0].blob
            # The push token (scope pull,push from the first challenge) covers the pull too.
            assert len(ts.requests) == before
            # Credentials go the OAuth way (POST, grant_type=password).
            assert ts.requests[0]["method"] == "POST" and ts.requests[0]["grant_type"] == "password"
        async with RegistryClient(cfg, credentials=bob) as client:
            before = len(ts.requests)
            repo = client.repository(f"{reg.host}/app/x:v1")
            await repo.resolve()
            await asyncio.gather(*(blob(repo, layer_desc(img, i)) for i in (0, 1, 0, 1)))
            # One token fetch for the pull scope, shared by concurrent requests.
            assert [r["scopes"] for r in ts.requests[before:]] == [["repository:app/x:pull"]]
        # An identity token (refresh token) with no user name.
        async with RegistryClient(cfg, credentials=StaticCredentials({"*": ("", "refresh-123")})) as client:
            assert (await client.repository(f"{reg.host}/app/x:v1").resolve()).digest == img.digest
            assert ts.requests[-1]["grant_type"] == "refresh_token"
        # Anonymous: the token server gives a token without access; the registry refuses it.
        async with RegistryClient(cfg) as client:
            with pytest.raises(errdefs.UnauthenticatedError, match="authorization failed"):
                await client.repository(f"{reg.host}/app/x:v1").resolve()
        # Wrong password: the token server refuses.
        async with RegistryClient(cfg, credentials=StaticCredentials({"*": ("bob", "bad")})) as client:
            with pytest.raises(errdefs.UnauthenticatedError, match="unexpected status 401"):
                await client.repository(f"{reg.host}/app/x:v1").resolve()


async def test_anonymous_token_pull(tmp_path: Path) -> None:
    img = small_image()
    auth = TokenAuth(users={"bob": "pw"}, grants={"bob": ("pull", "push"), "": ("pull",)})
    async with registry(tmp_path, auth=auth) as reg:
        cfg = HostsConfig(default_scheme="http")
        async with RegistryClient(cfg, credentials=StaticCredentials({"*": ("bob", "pw")})) as client:
            repo = client.repository(f"{reg.host}/pub/x:v1")

            async def one(data: bytes) -> object:
                yield data

            for d, data in img.blobs().items():
                await repo.upload_blob(Descriptor("x", d, len(data)), lambda data=data: one(data))  # type: ignore[misc]
            await repo.put_manifest(
                "v1", Descriptor(mt.OCI_MANIFEST, img.digest, len(img.manifest)), img.manifest
            )
        assert reg.token_server is not None
        async with RegistryClient(cfg) as client:
            repo = client.repository(f"{reg.host}/pub/x:v1")
            assert (await repo.resolve()).digest == img.digest
            assert reg.token_server.requests[-1]["method"] == "GET"
            assert reg.token_server.requests[-1]["user"] == ""
            # Anonymous users cannot push.
            with pytest.raises(errdefs.UnauthenticatedError):
                await repo.put_manifest(
                    "v2", Descriptor(mt.OCI_MANIFEST, img.digest, len(img.manifest)), img.manifest
                )


@pytest.fixture
async def proxied(reg: RegistryServer) -> contextlib.AsyncExitStack:  # type: ignore[misc]
    img = small_image()
    await im.push_raw(reg.url, "app/x", "v1", img)
    async with FaultProxy(reg.url) as proxy:
        yield proxy, img


async def test_retries_transient_500_then_succeeds(proxied: tuple[FaultProxy, im.BuiltImage]) -> None:
    proxy, img = proxied
    proxy.add(Rule("status", method="HEAD", path="/manifests/", status=503, times=2))
    async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as client:
        assert (await client.repository(f"{proxy.host}/app/x:v1").resolve()).digest == img.digest
    assert proxy.count("HEAD", "/manifests/v1") == 3


async def test_500_forever_is_unavailable(proxied: tuple[FaultProxy, im.BuiltImage]) -> None:
    proxy, _ = proxied
    proxy.add(
        Rule(
            "status",
            method="*",
            path="/manifests/",
            status=500,
            body=b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}',
            content_type="application/json",
        )
    )
    async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as client:
        with pytest.raises(errdefs.UnavailableError, match="500"):
            await client.repository(f"{proxy.host}/app/x:v1").resolve()
    assert proxy.count("HEAD", "/manifests/v1") == 3


async def test_html_error_page_is_reported(proxied: tuple[FaultProxy, im.BuiltImage]) -> None:
    proxy, img = proxied
    proxy.add(
        Rule(
            "status",
            method="GET",
            path="/blobs/",
            status=502,
            body=b"<html><body>Bad Gateway</body></html>",
            content_type="text/html",
        )
    )
    async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as client:
        with pytest.raises(errdefs.UnavailableError, match="HTML"):
            await blob(client.repository(f"{proxy.host}/app/x:v1"), layer_desc(img, 0))


async def test_resume_after_connection_drop(proxied: tuple[FaultProxy, im.BuiltImage]) -> None:
    proxy, img = proxied
    proxy.add(Rule("cut", path="/blobs/", after=30_000, times=2))
    resumes: list[int] = []
    async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as client:
        repo = client.repository(f"{proxy.host}/app/x:v1")
        d = layer_desc(img, 1)
        async with contextlib.aclosing(
            repo.iter_blob(d, on_resume=lambda pos, exc: resumes.append(pos))
        ) as it:
            data = b"".join([c async for c in it])
    assert data == img.layers[1].blob
    assert resumes and resumes[0] > 0
    ranged = [r for r in proxy.requests if "Range" in r.headers]
    assert ranged and ranged[0].headers["Range"] == f"bytes={resumes[0]}-"


async def test_resume_when_server_ignores_range(proxied: tuple[FaultProxy, im.BuiltImage]) -> None:
    proxy, img = proxied
    proxy.add(Rule("cut", path="/blobs/", after=20_000, times=1))
    proxy.add(Rule("ignore_range", path="/blobs/", with_range=True))
    async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as client:
        assert (
            await blob(client.repository(f"{proxy.host}/app/x:v1"), layer_desc(img, 1)) == img.layers[1].blob
        )


async def test_drop_forever_is_unavailable(proxied: tuple[FaultProxy, im.BuiltImage]) -> None:
    proxy, img = proxied
    proxy.add(Rule("cut", path="/blobs/", after=100))
    async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as client:
        with pytest.raises(errdefs.UnavailableError, match="connection lost"):
            await blob(client.repository(f"{proxy.host}/app/x:v1"), layer_desc(img, 1))


async def test_stall_is_a_clear_deadline_error(proxied: tuple[FaultProxy, im.BuiltImage]) -> None:
    proxy, img = proxied
    proxy.add(Rule("stall", path="/blobs/", after=1000, stall_for=30))
    opts = ClientOptions(retry=FAST.retry, stall_timeout=0.3)
    async with RegistryClient(HostsConfig(default_scheme="http"), options=opts) as client:
        with pytest.raises(errdefs.DeadlineExceededError, match=r"no data received for 0\.3s"):
            await asyncio.wait_for(blob(client.repository(f"{proxy.host}/app/x:v1"), layer_desc(img, 1)), 10)


async def test_redirect_is_followed(proxied: tuple[FaultProxy, im.BuiltImage]) -> None:
    proxy, img = proxied
    proxy.add(Rule("redirect", path="/blobs/", status=307))
    async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as client:
        assert (
            await blob(client.repository(f"{proxy.host}/app/x:v1"), layer_desc(img, 0)) == img.layers[0].blob
        )
    assert proxy.count("GET", "^/_redirect/v2/app/x/blobs/") == 1


async def test_size_and_digest_mismatch(proxied: tuple[FaultProxy, im.BuiltImage]) -> None:
    proxy, img = proxied
    d = layer_desc(img, 0)
    async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as client:
        repo = client.repository(f"{proxy.host}/app/x:v1")
        proxy.add(Rule("replace", path=f"/blobs/{d.digest}", body=img.layers[0].blob[:-10], times=1))
        with pytest.raises(errdefs.FailedPreconditionError, match="size mismatch"):
            await blob(repo, d)
        corrupted = bytearray(img.layers[0].blob)
        corrupted[5] ^= 0xFF
        proxy.add(Rule("replace", path=f"/blobs/{d.digest}", body=bytes(corrupted), times=1))
        with pytest.raises(errdefs.FailedPreconditionError, match="digest mismatch"):
            await repo.fetch_bytes(d)
        proxy.add(Rule("replace", path=f"/blobs/{d.digest}", body=img.layers[0].blob + b"extra", times=1))
        with pytest.raises(errdefs.FailedPreconditionError, match="size mismatch"):
            await blob(repo, d)


async def test_oversized_manifest_is_refused(proxied: tuple[FaultProxy, im.BuiltImage]) -> None:
    proxy, _ = proxied
    huge = b"{" + b" " * (4 * 1048 * 1048) + b"}"
    digest = "sha256:" + hashlib.sha256(huge).hexdigest()
    proxy.add(
        Rule(
            "replace",
            method="*",
            path="/manifests/v1",
            body=huge,
            content_type=mt.OCI_MANIFEST,
            headers={"Docker-Content-Digest": digest},
        )
    )
    async with RegistryClient(HostsConfig(default_scheme="http"), options=FAST) as client:
        with pytest.raises(errdefs.ResourceExhaustedError, match="byte manifest"):
            await client.repository(f"{proxy.host}/app/x:v1").resolve()


async def test_mirror_from_hosts_toml(proxied: tuple[FaultProxy, im.BuiltImage], tmp_path: Path) -> None:
    proxy, img = proxied
    # The registry only knows app/x; give it the name docker.io would use.
    d = tmp_path / "certs.d" / "docker.io"
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text(
        'server = "https://registry-1.docker.io"\n'
        f'[host."http://{proxy.host}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    async with RegistryClient(HostsConfig(config_path=[str(tmp_path / "certs.d")]), options=FAST) as client:
        desc = await client.repository("docker.io/app/x:v1").resolve()
        assert desc.digest == img.digest
    [rec] = [r for r in proxy.requests if r.method == "HEAD"]
    assert rec.query == "ns=docker.io"


async def test_tls_registry_ca_skip_verify_and_localhost_default(tmp_path: Path) -> None:
    import ssl

    import aiohttp

    img = small_image()
    async with registry(tmp_path, tls=True) as reg:
        assert reg.ca_cert is not None
        ctx = ssl.create_default_context(cafile=str(reg.ca_cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            await im.push_raw(reg.url, "app/x", "v1", img, session=s)
        certs = tmp_path / "certs.d"

        def hosts_toml(body: str) -> HostsConfig:
            d = certs / f"{reg.host.replace(':', '_')}_"
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts.toml").write_text(f'server = "https://{reg.host}"\n{body}')
            return HostsConfig(config_path=[str(certs)])

        ref = f"{reg.host}/app/x:v1"
        async with RegistryClient(hosts_toml(f'ca = "{reg.ca_cert}"\n'), options=FAST) as c:
            assert (await c.repository(ref).resolve()).digest == img.digest
        async with RegistryClient(hosts_toml(""), options=FAST) as c:
            with pytest.raises(errdefs.UnavailableError, match="TLS"):
                await c.repository(ref).resolve()
        async with RegistryClient(hosts_toml("skip_verify = true\n"), options=FAST) as c:
            assert (await c.repository(ref).resolve()).digest == img.digest
        # No configuration: a loopback registry is tried over HTTPS without verification first.
        async with RegistryClient(options=FAST) as c:
            assert (await c.repository(ref).resolve()).digest == img.digest
