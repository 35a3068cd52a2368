"""InProcessTransport over a real middleware-wrapped route table, without sockets or plugins."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.protobuf import empty_pb2
from grpclib.const import Cardinality, Handler

from arun import errdefs, namespaces
from arun.api.containerd.services.content.v1 import content_pb2
from arun.api.containerd.services.events.v1 import events_pb2
from arun.api.containerd.services.version.v1 import version_pb2
from arun.client import Client
from arun.client.transport import CallOptions
from arun.embedded import InProcessTransport
from arun.server import middleware

VERSION = "/containerd.services.version.v1.Version/Version"
SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"
WRITE = "/containerd.services.content.v1.Content/Write"
INFO = "/containerd.services.content.v1.Content/Info"


def routes(**handlers: tuple[Any, Cardinality, Any, Any]) -> dict[str, Handler]:
    return {
        path: Handler(middleware.wrap(path, fn), card, req, rep)
        for path, (fn, card, req, rep) in handlers.items()
    }


async def version(stream: Any) -> None:
    await stream.recv_message()
    # The namespace of the request is visible to the handler, as with the socket.
    await stream.send_message(version_pb2.VersionResponse(version="v", revision=namespaces.current() or ""))


async def info(stream: Any) -> None:
    req = await stream.recv_message()
    raise errdefs.NotFoundError(f"content digest {req.digest}: not found")


async def boom(stream: Any) -> None:
    await stream.recv_message()
    raise RuntimeError("a bug")


async def subscribe(stream: Any) -> None:
    await stream.recv_message()
    await stream.send_initial_metadata()
    for topic in ("/a", "/b", "/c"):
        await stream.send_message(events_pb2.Envelope(topic=topic, namespace=namespaces.current() or ""))
    await asyncio.sleep(3600)  # a subscription stays open until the client goes


async def write(stream: Any) -> None:
    total = 0
    while True:
        req = await stream.recv_message()
        if req is None:
            return
        total += len(req.data)
        await stream.send_message(content_pb2.WriteContentResponse(action=req.action, offset=total))


def transport() -> InProcessTransport:
    return InProcessTransport(
        routes(
            **{
                VERSION: (version, Cardinality.UNARY_UNARY, empty_pb2.Empty, version_pb2.VersionResponse),
                INFO: (info, Cardinality.UNARY_UNARY, content_pb2.InfoRequest, content_pb2.InfoResponse),
                "/x.Y/Boom": (boom, Cardinality.UNARY_UNARY, empty_pb2.Empty, empty_pb2.Empty),
                SUBSCRIBE: (
                    subscribe,
                    Cardinality.UNARY_STREAM,
                    events_pb2.SubscribeRequest,
                    events_pb2.Envelope,
                ),
                WRITE: (
                    write,
                    Cardinality.STREAM_STREAM,
                    content_pb2.WriteContentRequest,
                    content_pb2.WriteContentResponse,
                ),
            }
        )
    )


async def test_unary_carries_the_namespace_and_does_not_leak_context() -> None:
    c = Client(namespace="team-a", transport=transport())
    v = await c.version()
    assert (v.version, v.revision) == ("v", "team-a")
    assert namespaces.current() is None  # the handler ran in its own task


async def test_errors_arrive_as_errdefs() -> None:
    t = transport()
    with pytest.raises(errdefs.NotFoundError, match="sha256:x"):
        await t.unary(
            INFO, content_pb2.InfoRequest(digest="sha256:x"), content_pb2.InfoResponse, CallOptions("n")
        )
    with pytest.raises(errdefs.UnknownError, match="internal error"):
        await t.unary("/x.Y/Boom", empty_pb2.Empty(), empty_pb2.Empty, CallOptions("n"))
    with pytest.raises(errdefs.UnimplementedError):
        await t.unary("/x.Y/Nothing", empty_pb2.Empty(), empty_pb2.Empty, CallOptions("n"))


async def test_server_stream_and_early_exit_cancels_the_handler() -> None:
    t = transport()
    got = []
    async with t.server_stream(
        SUBSCRIBE, events_pb2.SubscribeRequest(), events_pb2.Envelope, CallOptions("ns")
    ) as it:
        async for env in it:
            got.append((env.topic, env.namespace))
            if len(got) == 3:
                break
    assert got == [("/a", "ns"), ("/b", "ns"), ("/c", "ns")]
    await asyncio.sleep(0)
    assert not t._tasks  # the subscription handler was cancelled when the block ended


async def test_bidi_stream() -> None:
    t = transport()
    async with t.bidi(
        WRITE, content_pb2.WriteContentRequest, content_pb2.WriteContentResponse, CallOptions("n")
    ) as s:
        await s.send(content_pb2.WriteContentRequest(action=content_pb2.WRITE, data=b"abc"))
        assert (await s.recv()).offset == 3
        await s.send(content_pb2.WriteContentRequest(action=content_pb2.COMMIT, data=b"de"), end=True)
        assert (await s.recv()).offset == 5
        assert await s.recv() is None


async def test_not_started_and_closed() -> None:
    with pytest.raises(errdefs.UnavailableError):
        await InProcessTransport().unary(
            VERSION, empty_pb2.Empty(), version_pb2.VersionResponse, CallOptions()
        )
    t = transport()
    await t.close()
    with pytest.raises(errdefs.UnavailableError):
        await t.unary(VERSION, empty_pb2.Empty(), version_pb2.VersionResponse, CallOptions())


async def test_deadline_reaches_the_handler() -> None:
    seen: list[float | None] = []

    async def slow(stream: Any) -> None:
        from arun import deadline

        await stream.recv_message()
        seen.append(deadline.remaining())
        await asyncio.sleep(10)

    t = InProcessTransport(
        routes(**{VERSION: (slow, Cardinality.UNARY_UNARY, empty_pb2.Empty, version_pb2.VersionResponse)})
    )
    with pytest.raises(errdefs.DeadlineExceededError):
        await t.unary(VERSION, empty_pb2.Empty(), version_pb2.VersionResponse, CallOptions(timeout=0.2))
    assert seen and seen[0] is not None and 0 < seen[0] <= 0.2
