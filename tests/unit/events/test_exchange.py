from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from arun import namespaces
from arun.api.containerd.events import container_pb2, task_pb2
from arun.core import typeurl
from arun.core.events import Envelope
from arun.errdefs import FailedPreconditionError, InvalidArgumentError
from arun.events.exchange import Exchange, unmarshal


async def drain(sub: object, n: int) -> list[Envelope]:
    out = []
    async with asyncio.timeout(5):
        for _ in range(n):
            out.append(await sub.__anext__())  # type: ignore[attr-defined]
    return out


async def test_publish_and_subscribe() -> None:
    ex = Exchange()
    everything = ex.subscribe()
    creates = ex.subscribe('topic=="/containers/create"')
    with namespaces.use("ns1"):
        await ex.publish("/containers/create", container_pb2.ContainerCreate(id="c1", image="busybox"))
        await ex.publish("/containers/delete", container_pb2.ContainerDelete(id="c1"))
    got = await drain(everything, 2)
    assert [(e.namespace, e.topic) for e in got] == [
        ("ns1", "/containers/create"),
        ("ns1", "/containers/delete"),
    ]
    assert got[0].event.type_url == "containerd.events.ContainerCreate"
    msg = unmarshal(got[0].event)
    assert isinstance(msg, container_pb2.ContainerCreate) and msg.id == "c1"
    assert [e.topic for e in await drain(creates, 1)] == ["/containers/create"]
    assert creates.pending() == 0
    everything.close()
    creates.close()
    assert ex.subscribers == 0


async def test_filters_over_fields() -> None:
    ex = Exchange()
    by_ns = ex.subscribe("namespace==b")
    by_field = ex.subscribe("event.id==c2", "event.container_id==t1,topic~=|^/tasks/|")
    by_label = ex.subscribe("event.labels.app==web")
    for ns, topic, ev in [
        ("a", "/containers/create", container_pb2.ContainerCreate(id="c1")),
        ("b", "/containers/create", container_pb2.ContainerCreate(id="c2")),
        ("a", "/tasks/exit", task_pb2.TaskExit(container_id="t1", exit_status=3)),
        ("a", "/containers/update", container_pb2.ContainerUpdate(id="c3", labels={"app": "web"})),
        ("a", "/x/y", typeurl.Any("unknown.Type", b"\x01")),
    ]:
        with namespaces.use(ns):
            await ex.publish(topic, ev)
    assert [e.topic for e in await drain(by_ns, 1)] == ["/containers/create"]
    assert by_ns.pending() == 0
    assert [e.topic for e in await drain(by_field, 2)] == ["/containers/create", "/tasks/exit"]
    assert by_field.pending() == 0
    assert [e.topic for e in await drain(by_label, 1)] == ["/containers/update"]
    assert by_label.pending() == 0


async def test_bad_input() -> None:
    ex = Exchange()
    with pytest.raises(InvalidArgumentError):
        ex.subscribe("topic==")
    with pytest.raises(FailedPreconditionError):
        await ex.publish("/a/b", container_pb2.ContainerDelete(id="x"))
    with namespaces.use("ns"):
        for topic in ["", "noslash", "/", "/a//b", "/a/b c"]:
            with pytest.raises(InvalidArgumentError):
                await ex.publish(topic, container_pb2.ContainerDelete(id="x"))
        with pytest.raises(InvalidArgumentError):
            await ex.publish("/a", object())
    now = datetime.now(UTC)
    with pytest.raises(InvalidArgumentError):
        await ex.forward(Envelope(now, "bad ns", "/a", typeurl.Any("t", b"")))
    with pytest.raises(InvalidArgumentError):
        await ex.forward(Envelope(now, "ns", "a", typeurl.Any("t", b"")))
    with pytest.raises(InvalidArgumentError):
        await ex.forward(Envelope(datetime.fromtimestamp(0, UTC), "ns", "/a", typeurl.Any("t", b"")))


async def test_forward_keeps_the_envelope() -> None:
    ex = Exchange()
    sub = ex.subscribe()
    env = Envelope(datetime(2024, 1, 2, tzinfo=UTC), "k8s.io", "/tasks/exit", typeurl.Any("t", b"x"))
    await ex.forward(env)
    assert await drain(sub, 1) == [env]


async def test_close_ends_iteration() -> None:
    ex = Exchange()
    sub = ex.subscribe()
    got: list[Envelope] = []

    async def consume() -> None:
        async for env in sub:
            got.append(env)

    t = asyncio.create_task(consume())
    with namespaces.use("n"):
        await ex.publish("/a", container_pb2.ContainerDelete(id="1"))
    await asyncio.sleep(0.01)
    await ex.close()
    async with asyncio.timeout(5):
        await t
    assert len(got) == 1
    with namespaces.use("n"):
        await ex.publish("/a", container_pb2.ContainerDelete(id="2"))
    assert len(got) == 1
