"""Pulling an image: in the daemon (the transfer service), else client-side.

arun and containerd >= 1.7 serve ``containerd.services.transfer.v1.Transfer``:
the client opens a stream on the Streaming service for progress, then asks for
a transfer from an ``OCIRegistry`` source to an ``ImageStore`` destination
(with unpack configurations), so the daemon's registry configuration (hosts,
mirrors) applies, as for CRI pulls.

containerd 1.6 has no transfer service; there the client resolves and fetches
itself, as ``ctr`` 1.6 does, writing manifests, config and layers into the
daemon's content store, then creates the image record and unpacks it through
the snapshot and diff services, with arun's registry client (``arun.remotes``).

Credentials (``credentials=(user, secret)``) travel to the daemon over a second
stream it asks for them on (``resolver.auth_stream``), or to the registry
client directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from arun import errdefs, reference
from arun.client.images import INDEX_TYPES, MANIFEST_TYPES, Platform, default_platform, resolve_manifest
from arun.client.types import Descriptor, ImageInfo, PullProgress

if TYPE_CHECKING:
    from arun.client.client import Client

__all__ = ["normalize_reference", "pull"]

Progress = Callable[[PullProgress], object] | None
_STREAM = "/containerd.services.streaming.v1.Streaming/Stream"
_TRANSFER = "/containerd.services.transfer.v1.Transfer/Transfer"


def normalize_reference(ref: str) -> str:
    """Docker's normalisation: ``busybox`` → ``docker.io/library/busybox:latest``."""
    return str(reference.parse_docker_ref(ref))


def _pack(msg: Message) -> any_pb2.Any:
    return any_pb2.Any(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


def _type_name(a: Any) -> str:
    return str(a.type_url).rsplit("/", 1)[-1]


async def pull(
    client: Client,
    ref: str,
    *,
    progress: Progress = None,
    unpack: bool = True,
    snapshotter: str | None = None,
    platform: Platform | None = None,
    plain_http: bool = False,
    hosts_dir: str = "",
    credentials: tuple[str, str] | None = None,
) -> ImageInfo:
    name = normalize_reference(ref)
    plat = platform or default_platform()
    opts = _Options(progress, unpack, snapshotter, plat, plain_http, hosts_dir, credentials)
    if not await has_transfer(client):
        return await _pull_client_side(client, name, opts)
    await _pull_transfer(client, name, opts)
    return await client.images.get(name)


class _Options:
    def __init__(
        self,
        progress: Progress,
        unpack: bool,
        snapshotter: str | None,
        platform: Platform,
        plain_http: bool,
        hosts_dir: str,
        credentials: tuple[str, str] | None,
    ) -> None:
        self.progress = progress
        self.unpack = unpack
        self.snapshotter = snapshotter
        self.platform = platform
        self.plain_http = plain_http
        self.hosts_dir = hosts_dir
        self.credentials = credentials


async def has_transfer(client: Client) -> bool:
    """Whether the daemon serves the transfer service (arun, containerd >= 1.7).

    Asked through introspection (the ``io.containerd.grpc.v1`` plugin ``transfer``,
    loaded without error): containerd 1.6 has none. Probing with a call instead is
    ambiguous — a missing streaming service resets the stream, and a transfer
    service answers UNIMPLEMENTED for transfers it cannot do.
    """
    from arun.api.containerd.services.introspection.v1 import introspection_pb2

    try:
        r = await client._unary(
            "/containerd.services.introspection.v1.Introspection/Plugins",
            introspection_pb2.PluginsRequest(filters=["type==io.containerd.grpc.v1,id==transfer"]),
            introspection_pb2.PluginsResponse,
        )
    except errdefs.UnimplementedError:
        return False
    return any(p.id == "transfer" and not p.HasField("init_err") for p in r.plugins)


@contextlib.asynccontextmanager
async def _daemon_stream(client: Client) -> AsyncIterator[tuple[str, Any]]:
    """A stream registered with the daemon's Streaming service: (its id, the stream)."""
    from arun.api.containerd.services.streaming.v1 import streaming_pb2

    stream_id = os.urandom(16).hex()
    async with client._bidi(_STREAM, any_pb2.Any, any_pb2.Any) as s:
        await s.send(_pack(streaming_pb2.StreamInit(id=stream_id)))
        if await s.recv() is None:
            raise errdefs.UnavailableError("the daemon closed a stream before acknowledging it")
        yield stream_id, s


async def _pull_transfer(client: Client, name: str, o: _Options) -> None:
    from arun.api.containerd.services.transfer.v1 import transfer_pb2
    from arun.api.containerd.types import platform_pb2
    from arun.api.containerd.types.transfer import imagestore_pb2, progress_pb2, registry_pb2

    plat = o.platform
    pplat = platform_pb2.Platform(os=plat.os, architecture=plat.architecture, variant=plat.variant)
    store = imagestore_pb2.ImageStore(name=name, platforms=[pplat])
    if o.unpack:
        store.unpacks.append(
            imagestore_pb2.UnpackConfiguration(platform=pplat, snapshotter=o.snapshotter or "")
        )
    resolver = registry_pb2.RegistryResolver(host_dir=o.hosts_dir)
    if o.plain_http:
        resolver.default_scheme = "http"

    async def read_progress(s: Any) -> None:
        while True:
            msg = await s.recv()
            if msg is None:
                return
            if o.progress is not None and _type_name(msg) == progress_pb2.Progress.DESCRIPTOR.full_name:
                p = progress_pb2.Progress.FromString(msg.value)
                o.progress(PullProgress(p.name, p.event, int(p.progress), int(p.total)))

    async def answer_auth(s: Any, creds: tuple[str, str]) -> None:
        while True:
            msg = await s.recv()
            if msg is None:
                return
            if _type_name(msg) == registry_pb2.AuthRequest.DESCRIPTOR.full_name:
                await s.send(
                    _pack(
                        registry_pb2.AuthResponse(
                            authType=registry_pb2.CREDENTIALS, username=creds[0], secret=creds[1]
                        )
                    )
                )

    async with contextlib.AsyncExitStack() as stack:
        progress_id, ps = await stack.enter_async_context(_daemon_stream(client))
        helpers = [asyncio.ensure_future(read_progress(ps))]
        if o.credentials is not None:
            auth_id, auth = await stack.enter_async_context(_daemon_stream(client))
            resolver.auth_stream = auth_id
            helpers.append(asyncio.ensure_future(answer_auth(auth, o.credentials)))
        source = registry_pb2.OCIRegistry(reference=name, resolver=resolver)
        try:
            await client._unary(
                _TRANSFER,
                transfer_pb2.TransferRequest(
                    source=_pack(source),
                    destination=_pack(store),
                    options=transfer_pb2.TransferOptions(progress_stream=progress_id),
                ),
                empty_pb2.Empty,
                call_timeout=None,
            )
            # The last progress messages, until the daemon closes the stream.
            with contextlib.suppress(TimeoutError, errdefs.ArunError):
                await asyncio.wait_for(asyncio.shield(helpers[0]), 1.0)
        finally:
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)


async def _pull_client_side(client: Client, name: str, o: _Options) -> ImageInfo:
    """Resolve and fetch here, store in the daemon (containerd 1.6's ``ctr images pull``)."""
    from arun import remotes
    from arun.client.archive import children_labels
    from arun.client.unpack import unpack as unpack_image
    from arun.core.content import Descriptor as CoreDescriptor

    def core(d: Descriptor) -> CoreDescriptor:
        return CoreDescriptor(media_type=d.media_type, digest=d.digest, size=d.size)

    progress, plat = o.progress, o.platform
    hosts = remotes.HostsConfig(
        config_path=[o.hosts_dir] if o.hosts_dir else [], default_scheme="http" if o.plain_http else ""
    )
    creds = remotes.StaticCredentials({"*": o.credentials}) if o.credentials else None
    async with remotes.RegistryClient(hosts, credentials=creds) as rc, client.lease():
        repo = rc.repository(name)
        top = await repo.resolve()
        root = Descriptor(media_type=top.media_type, digest=top.digest, size=top.size)

        async def counted(desc: Descriptor) -> AsyncIterator[bytes]:
            """The blob's chunks, reporting the bytes so far (per-layer progress bars)."""
            done = 0
            async for chunk in repo.iter_blob(core(desc)):
                done += len(chunk)
                if progress:
                    progress(PullProgress(desc.digest, "downloading", done, desc.size))
                yield chunk

        async def walk(desc: Descriptor) -> None:
            if await client.content.exists(desc.digest):
                if progress:
                    progress(PullProgress(desc.digest, "exists", desc.size, desc.size))
                if desc.media_type not in INDEX_TYPES and desc.media_type not in MANIFEST_TYPES:
                    return
            if desc.media_type in INDEX_TYPES or desc.media_type in MANIFEST_TYPES:
                body = await repo.fetch_bytes(core(desc))
                doc = json.loads(body)
                if "manifests" in doc:
                    kids = [m for m in doc["manifests"] if plat.matches(m.get("platform"))][:1]
                else:
                    kids = [doc["config"], *(doc.get("layers") or [])]
                for k in kids:
                    await walk(Descriptor.from_oci(k))
                # Parents after their children, with the labels that keep the children alive.
                await client.content.write(
                    body, expected=desc.digest, size=desc.size, labels=children_labels(kids)
                )
                return
            if progress:
                progress(PullProgress(desc.digest, "downloading", 0, desc.size))
            await client.content.write(counted(desc), expected=desc.digest, size=desc.size)
            if progress:
                progress(PullProgress(desc.digest, "done", desc.size, desc.size))

        await walk(root)
        image = await client.images.put(ImageInfo(name=name, target=root))
        if o.unpack:
            m = await resolve_manifest(client, root, plat)
            await unpack_image(client, m, o.snapshotter, progress)
    return image
