"""Pulling an image: in the daemon (the transfer service), else client-side.

arun and containerd >= 1.7 serve ``containerd.services.transfer.v1.Transfer``:
the client opens a stream on the Streaming service for progress, then asks for
a transfer from an ``OCIRegistry`` source to an ``ImageStore`` destination
(with unpack configurations), so the daemon's registry configuration (hosts,
mirrors) applies, as for CRI pulls.

containerd 1.6 has no transfer service; there the client resolves and fetches
itself, as ``ctr`` 1.6 does, writing manifests, config and layers into the
daemon's content store, then creates the image record and unpacks it through
the snapshot and diff services. That path needs the registry client
(``arun.remotes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from arun import errdefs
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
    text = ref.strip()
    if not text or any(c.isspace() for c in text) or text != text.strip("/:@"):
        raise errdefs.InvalidArgumentError(f"invalid image reference {ref!r}")
    name, at, digest = text.partition("@")
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = "docker.io", name
    else:
        domain, path = first, rest
    if domain == "docker.io" and "/" not in path.split(":")[0]:
        path = "library/" + path
    last = path.rsplit("/", 1)[-1]
    if ":" not in last and not at:
        path += ":latest"
    if path != path.lower().split(":")[0] + (":" + path.split(":", 1)[1] if ":" in path else ""):
        raise errdefs.InvalidArgumentError(
            f"invalid image reference {ref!r}: repository names are lower case"
        )
    return f"{domain}/{path}" + (f"@{digest}" if at else "")


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
) -> ImageInfo:
    name = normalize_reference(ref)
    plat = platform or default_platform()
    if not await has_transfer(client):
        return await _pull_client_side(
            client, name, progress, unpack, snapshotter, plat, plain_http, hosts_dir
        )
    await _pull_transfer(client, name, progress, unpack, snapshotter, plat, plain_http, hosts_dir)
    return await client.images.get(name)


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
    return True


async def _pull_transfer(
    client: Client,
    name: str,
    progress: Progress,
    unpack: bool,
    snapshotter: str | None,
    plat: Platform,
    plain_http: bool,
    hosts_dir: str,
) -> None:
    from arun.api.containerd.services.streaming.v1 import streaming_pb2
    from arun.api.containerd.services.transfer.v1 import transfer_pb2
    from arun.api.containerd.types import platform_pb2
    from arun.api.containerd.types.transfer import imagestore_pb2, progress_pb2, registry_pb2

    pplat = platform_pb2.Platform(os=plat.os, architecture=plat.architecture, variant=plat.variant)
    store = imagestore_pb2.ImageStore(name=name, platforms=[pplat])
    if unpack:
        store.unpacks.append(
            imagestore_pb2.UnpackConfiguration(platform=pplat, snapshotter=snapshotter or "")
        )
    resolver = registry_pb2.RegistryResolver(host_dir=hosts_dir)
    if plain_http:
        resolver.default_scheme = "http"
    source = registry_pb2.OCIRegistry(reference=name, resolver=resolver)
    stream_id = os.urandom(16).hex()
    async with client._bidi(_STREAM, any_pb2.Any, any_pb2.Any) as s:
        await s.send(_pack(streaming_pb2.StreamInit(id=stream_id)))
        if await s.recv() is None:
            raise errdefs.UnavailableError("the daemon closed the progress stream before acknowledging it")

        async def read_progress() -> None:
            while True:
                msg = await s.recv()
                if msg is None:
                    return
                if progress is not None and _type_name(msg) == progress_pb2.Progress.DESCRIPTOR.full_name:
                    p = progress_pb2.Progress.FromString(msg.value)
                    progress(PullProgress(p.name, p.event, int(p.progress), int(p.total)))

        reader = asyncio.ensure_future(read_progress())
        try:
            await client._unary(
                _TRANSFER,
                transfer_pb2.TransferRequest(
                    source=_pack(source),
                    destination=_pack(store),
                    options=transfer_pb2.TransferOptions(progress_stream=stream_id),
                ),
                empty_pb2.Empty,
                call_timeout=None,
            )
            with contextlib.suppress(TimeoutError, errdefs.ArunError):
                await asyncio.wait_for(asyncio.shield(reader), 1.0)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def _pull_client_side(
    client: Client,
    name: str,
    progress: Progress,
    unpack: bool,
    snapshotter: str | None,
    plat: Platform,
    plain_http: bool,
    hosts_dir: str,
) -> ImageInfo:
    """Resolve and fetch here, store in the daemon (containerd 1.6's ``ctr images pull``)."""
    try:
        # The registry client (arun.remotes) is optional here: imported by name, used if present.
        remotes: Any = importlib.import_module("arun.remotes")
    except ImportError:
        raise errdefs.UnimplementedError(
            "the daemon has no transfer service and this arun has no registry client for a client-side pull"
        ) from None
    from arun.client.archive import children_labels
    from arun.client.unpack import unpack as unpack_image
    from arun.core.content import Descriptor as CoreDescriptor

    def core(d: Descriptor) -> CoreDescriptor:
        return CoreDescriptor(media_type=d.media_type, digest=d.digest, size=d.size)

    hosts = remotes.HostsConfig(
        config_path=[hosts_dir] if hosts_dir else [], default_scheme="http" if plain_http else ""
    )
    async with remotes.RegistryClient(hosts) as rc, client.lease():
        repo = rc.repository(name)
        top = await repo.resolve()
        root = Descriptor(media_type=top.media_type, digest=top.digest, size=top.size)

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
            await client.content.write(repo.iter_blob(core(desc)), expected=desc.digest, size=desc.size)
            if progress:
                progress(PullProgress(desc.digest, "done", desc.size, desc.size))

        await walk(root)
        image = await client.images.put(ImageInfo(name=name, target=root))
        if unpack:
            m = await resolve_manifest(client, root, plat)
            await unpack_image(client, m, snapshotter, progress)
    return image
