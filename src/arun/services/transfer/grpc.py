"""The Transfer servicer (``containerd.services.transfer.v1``), as ``ctr`` 2.x drives it.

Supported: ``OCIRegistry`` → ``ImageStore`` (pull, unpacking for each ``unpacks`` entry)
and ``ImageStore`` → ``OCIRegistry`` (push). Progress goes to the client's
``progress_stream`` as ``containerd.types.transfer.Progress`` messages with containerd's
event names (``waiting``, ``downloading``, ``complete``, ``already exists``,
``extracting``, ``extracted``, ``saved`` …); registry credentials are asked for on the
resolver's ``auth_stream`` (``AuthRequest`` → ``AuthResponse``), once per host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import empty_pb2

from arun import anyproto, errdefs, platforms
from arun.api.containerd.services.transfer.v1 import transfer_grpc
from arun.api.containerd.types import descriptor_pb2
from arun.api.containerd.types.transfer import imagestore_pb2, progress_pb2, registry_pb2
from arun.streaming.manager import Stream, StreamManager
from arun.transfer.local import LocalTransfer
from arun.transfer.progress import Phase, Progress

log = logging.getLogger(__name__)

__all__ = ["TransferServicer", "stream_credentials"]

# How long a request waits for the client to open the streams it names.
STREAM_WAIT = 5.0

_EVENTS = {
    Phase.WAITING: "waiting",
    Phase.DOWNLOADING: "downloading",
    Phase.DOWNLOADED: "complete",
    Phase.EXISTS: "already exists",
    Phase.UNPACKING: "extracting",
    Phase.UNPACKED: "extracted",
    Phase.UPLOADING: "uploading",
    Phase.UPLOADED: "complete",
    Phase.MOUNTED: "mounted",
}


def _ref_key(kind: str, digest: str) -> str:
    prefix = {"root": "manifest", "image": "image"}.get(kind, kind or "unknown")
    return f"{prefix}-{digest}"


def _platform(p: Any) -> platforms.Platform:
    return platforms.normalize(
        platforms.Platform(
            p.os or "linux",
            p.architecture,
            p.variant,
            getattr(p, "os_version", ""),
            tuple(getattr(p, "os_features", ())),
        )
    )


class _ProgressSender:
    """Turns pull/push events into Progress messages on the client's stream, sent by one
    task so a slow client never blocks the transfer (downloading events coalesce)."""

    def __init__(self, stream: Stream, ref: str) -> None:
        self.stream = stream
        self.ref = ref
        self.queue: asyncio.Queue[progress_pb2.Progress | None] = asyncio.Queue()
        self.latest: dict[str, progress_pb2.Progress] = {}
        self.task = asyncio.create_task(self._run())

    def event(
        self, text: str, *, name: str = "", progress: int = 0, total: int = 0, desc: Any = None
    ) -> None:
        msg = progress_pb2.Progress(event=text, name=name, progress=progress, total=total)
        if desc is not None:
            msg.desc.CopyFrom(desc)
        if name:
            msg.parents.append(self.ref)
        if text in ("downloading", "uploading") and name in self.latest:
            self.latest[name] = msg
            return
        if text in ("downloading", "uploading"):
            self.latest[name] = msg
        self.queue.put_nowait(msg)

    def __call__(self, ev: Progress) -> None:
        if ev.phase == Phase.RESOLVING:
            self.event(f"Resolving from {self.ref}")
            return
        if ev.phase == Phase.RESOLVED:
            self.event(f"Pulling from {self.ref}")
            self.event("fetching image content")
            return
        text = _EVENTS.get(ev.phase)
        if text is None or not ev.digest:
            return
        desc = descriptor_pb2.Descriptor(media_type=ev.media_type, digest=ev.digest, size=ev.total)
        progress = ev.total if ev.phase in (Phase.DOWNLOADED, Phase.EXISTS, Phase.UPLOADED) else ev.offset
        self.event(text, name=_ref_key(ev.kind, ev.digest), progress=progress, total=ev.total, desc=desc)

    async def _run(self) -> None:
        while True:
            msg = await self.queue.get()
            if msg is None:
                return
            if msg.event in ("downloading", "uploading"):
                msg = self.latest.pop(msg.name, msg)
            try:
                await self.stream.send(anyproto.pack(msg))
            except Exception as exc:  # the client went away: keep transferring, stop reporting
                log.debug("progress stream closed: %s", exc)
                return

    async def finish(self) -> None:
        self.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.task), 10)
        with contextlib.suppress(Exception):
            await self.stream.close()


def stream_credentials(stream: Stream, reference: str) -> Callable[[str], Awaitable[tuple[str, str]]]:
    """Credentials asked from the client over its auth stream, cached per host."""
    lock = asyncio.Lock()
    cache: dict[str, tuple[str, str]] = {}

    async def creds(host: str) -> tuple[str, str]:
        async with lock:
            if host in cache:
                return cache[host]
            await stream.send(anyproto.pack(registry_pb2.AuthRequest(host=host, reference=reference)))
            resp = anyproto.unpack(await stream.recv(), registry_pb2.AuthResponse)
            if resp.authType == registry_pb2.CREDENTIALS:
                out = (str(resp.username), str(resp.secret))
            elif resp.authType == registry_pb2.REFRESH:
                out = ("", str(resp.secret))
            elif resp.authType == registry_pb2.NONE:
                out = ("", "")
            else:
                raise errdefs.UnimplementedError(
                    f"auth type {resp.authType} from the client is not supported"
                )
            cache[host] = out
            return out

    return creds


class TransferServicer(transfer_grpc.TransferBase):
    def __init__(self, transfer: LocalTransfer, streams: StreamManager) -> None:
        self.transfer = transfer
        self.streams = streams

    async def Transfer(self, stream: Any) -> None:
        req = await stream.recv_message()
        src, dst = req.source, req.destination
        progress = req.options.progress_stream
        opened: list[Stream] = []
        try:
            if anyproto.is_type(src, registry_pb2.OCIRegistry) and anyproto.is_type(
                dst, imagestore_pb2.ImageStore
            ):
                reg = anyproto.unpack(src, registry_pb2.OCIRegistry)
                await self._pull(reg, anyproto.unpack(dst, imagestore_pb2.ImageStore), progress, opened)
            elif anyproto.is_type(src, imagestore_pb2.ImageStore) and anyproto.is_type(
                dst, registry_pb2.OCIRegistry
            ):
                reg = anyproto.unpack(dst, registry_pb2.OCIRegistry)
                await self._push(anyproto.unpack(src, imagestore_pb2.ImageStore), reg, progress, opened)
            else:
                raise errdefs.UnimplementedError(
                    f"unable to transfer from {anyproto.type_name(src)} to {anyproto.type_name(dst)}"
                )
        finally:
            # The credentials stream served this transfer only.
            for s in opened:
                with contextlib.suppress(Exception):
                    await s.close()
        await stream.send_message(empty_pb2.Empty())

    async def _resolver_args(self, reg: Any, opened: list[Stream]) -> dict[str, Any]:
        r = reg.resolver
        args: dict[str, Any] = {
            "plain_http": r.default_scheme == "http",
            "host_dir": r.host_dir,
            "headers": dict(r.headers),
        }
        if r.auth_stream:
            s = await self.streams.get(r.auth_stream, wait=STREAM_WAIT)
            opened.append(s)
            args["credentials"] = stream_credentials(s, reg.reference)
        return args

    async def _progress(self, stream_id: str, ref: str) -> _ProgressSender | None:
        if not stream_id:
            return None
        return _ProgressSender(await self.streams.get(stream_id, wait=STREAM_WAIT), ref)

    async def _pull(self, reg: Any, store: Any, progress_stream: str, opened: list[Stream]) -> None:
        ref = reg.reference
        if not ref:
            raise errdefs.InvalidArgumentError("registry reference must not be empty")
        args = await self._resolver_args(reg, opened)
        sender = await self._progress(progress_stream, ref)
        plats = [_platform(u.platform) for u in store.unpacks if u.HasField("platform")]
        plats += [_platform(p) for p in store.platforms]
        snapshotter = next((u.snapshotter for u in store.unpacks if u.snapshotter), "")
        try:
            res = await self.transfer.pull(
                ref,
                platforms_=plats,
                unpack=len(store.unpacks) > 0,
                snapshotter=snapshotter,
                image_name=store.name or ref,
                image_labels=dict(store.labels),
                on_progress=sender,
                **args,
            )
            if sender is not None:
                t = res.target
                desc = descriptor_pb2.Descriptor(media_type=t.media_type, digest=t.digest, size=t.size)
                sender.event("saved", name=res.name, desc=desc)
                sender.event(f"Completed pull from {ref}")
        finally:
            if sender is not None:
                await sender.finish()

    async def _push(self, store: Any, reg: Any, progress_stream: str, opened: list[Stream]) -> None:
        if not store.name:
            raise errdefs.InvalidArgumentError("image name must not be empty")
        args = await self._resolver_args(reg, opened)
        target = await self.transfer.image_target(store.name)
        sender = await self._progress(progress_stream, reg.reference)
        plats = [_platform(p) for p in store.platforms]
        try:
            await self.transfer.push(reg.reference, target, platforms_=plats, on_progress=sender, **args)
            if sender is not None:
                sender.event(f"Completed push to {reg.reference}")
        finally:
            if sender is not None:
                await sender.finish()
