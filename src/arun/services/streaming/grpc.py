"""The Streaming servicer: register a client's stream under the id of its ``StreamInit``,
answer with an empty message, and keep the RPC open until the stream is closed (by the
client, or by the daemon once the transfer using it is done)."""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf import any_pb2, empty_pb2

from arun import anyproto, errdefs
from arun.api.containerd.services.streaming.v1 import streaming_grpc, streaming_pb2
from arun.streaming.manager import StreamManager

__all__ = ["StreamingServicer"]


class _GrpcStream:
    """A registered stream over one grpclib server stream."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._send_lock = asyncio.Lock()
        self.closed = asyncio.Event()

    async def send(self, msg: any_pb2.Any) -> None:
        if self.closed.is_set():
            raise errdefs.UnavailableError("stream is closed")
        async with self._send_lock:
            await self._stream.send_message(msg)

    async def recv(self) -> any_pb2.Any:
        if self.closed.is_set():
            raise errdefs.UnavailableError("stream is closed")
        msg = await self._stream.recv_message()
        if msg is None:
            self.closed.set()
            raise errdefs.UnavailableError("stream closed by the client")
        return msg

    async def close(self) -> None:
        self.closed.set()


class StreamingServicer(streaming_grpc.StreamingBase):
    def __init__(self, manager: StreamManager) -> None:
        self.manager = manager

    async def Stream(self, stream: Any) -> None:
        first = await stream.recv_message()
        if first is None:
            return
        init = anyproto.unpack(first, streaming_pb2.StreamInit)
        s = _GrpcStream(stream)
        await self.manager.register(init.id, s)
        try:
            await stream.send_message(anyproto.pack(empty_pb2.Empty()))
            await s.closed.wait()
        finally:
            await self.manager.unregister(init.id, s)
