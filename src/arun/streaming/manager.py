"""Streams registered by clients through the Streaming service and used by transfers.

A client opens ``containerd.services.streaming.v1.Streaming/Stream``, names it with a
``StreamInit``, and then refers to it by that id in a later request (the transfer
service's progress stream, a registry credentials stream). ``StreamManager`` keeps the
open streams by namespace and id until the client or the user closes them.

A ``Stream`` carries ``google.protobuf.Any`` messages both ways; the service adapter
provides ``send``/``recv`` over its gRPC stream.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from google.protobuf import any_pb2

from arun import errdefs, namespaces

__all__ = ["Stream", "StreamManager"]


class Stream(Protocol):
    async def send(self, msg: any_pb2.Any) -> None: ...

    async def recv(self) -> any_pb2.Any:
        """The next message; UnavailableError once the client has gone."""
        ...

    async def close(self) -> None: ...


class StreamManager:
    def __init__(self) -> None:
        self._streams: dict[tuple[str, str], Stream] = {}
        self._changed = asyncio.Condition()

    async def register(self, id: str, stream: Stream) -> None:
        ns = namespaces.required()
        if not id:
            raise errdefs.InvalidArgumentError("stream id must not be empty")
        async with self._changed:
            if (ns, id) in self._streams:
                raise errdefs.AlreadyExistsError(f"stream {id!r} already exists in namespace {ns!r}")
            self._streams[(ns, id)] = stream
            self._changed.notify_all()

    async def unregister(self, id: str, stream: Stream | None = None) -> None:
        ns = namespaces.required()
        async with self._changed:
            cur = self._streams.get((ns, id))
            if cur is not None and (stream is None or cur is stream):
                del self._streams[(ns, id)]

    async def get(self, id: str, *, wait: float = 0.0) -> Stream:
        """The stream ``id`` of this namespace; with ``wait``, up to that many seconds for
        it to be registered (a client may open it just after sending the request)."""
        ns = namespaces.required()
        async with self._changed:
            try:
                async with asyncio.timeout(wait if wait > 0 else None):
                    while (ns, id) not in self._streams:
                        if wait <= 0:
                            break
                        await self._changed.wait()
            except TimeoutError:
                pass
            s = self._streams.get((ns, id))
        if s is None:
            raise errdefs.NotFoundError(f"stream {id!r} not found in namespace {ns!r}")
        return s
