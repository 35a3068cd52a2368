"""Events forwarded by a shim over ttrpc reach the exchange unchanged."""

from __future__ import annotations

import asyncio
import socket

import pytest

from arun.api.containerd.events import task_pb2
from arun.api.containerd.services.ttrpc.events.v1 import events_pb2
from arun.errdefs import InvalidArgumentError
from arun.errdefs import grpc as errgrpc
from arun.events.exchange import Exchange
from arun.services.events.plugin import EventsService
from arun.services.events.ttrpc import SERVICE
from arun.ttrpc import Client, Server


class Registrar:
    def __init__(self, server: Server) -> None:
        self.server = server

    def register(self, service: object, handler: object, /) -> None:
        self.server.register(service, handler)  # type: ignore[arg-type]


async def test_forward_reaches_subscribers() -> None:
    exchange = Exchange()
    server = Server(to_status=lambda e: (errgrpc.code_of(e), errgrpc.message_of(e)))
    EventsService(exchange).register_ttrpc(Registrar(server))
    assert server.services == [SERVICE]
    a, b = socket.socketpair()
    await server.accept_socket(a)
    client = await Client.from_socket(b, from_status=errgrpc.from_code)
    sub = exchange.subscribe('topic~="/tasks/"')
    try:
        req = events_pb2.ForwardRequest()
        req.envelope.timestamp.FromSeconds(1_700_000_000)
        req.envelope.namespace = "k8s.io"
        req.envelope.topic = "/tasks/exit"
        req.envelope.event.type_url = "containerd.events.TaskExit"
        req.envelope.event.value = task_pb2.TaskExit(container_id="c1", exit_status=3).SerializeToString()
        await client.call(SERVICE, "Forward", req.SerializeToString())
        env = await asyncio.wait_for(sub.__anext__(), 5)
        assert (env.namespace, env.topic, env.event.type_url) == (
            "k8s.io",
            "/tasks/exit",
            "containerd.events.TaskExit",
        )
        assert int(env.timestamp.timestamp()) == 1_700_000_000
        assert task_pb2.TaskExit.FromString(env.event.value).exit_status == 3
        # A malformed envelope is refused with INVALID_ARGUMENT.
        req.envelope.topic = "no-slash"
        with pytest.raises(InvalidArgumentError):
            await client.call(SERVICE, "Forward", req.SerializeToString())
    finally:
        sub.close()
        await client.close()
        await server.close()
