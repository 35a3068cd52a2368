"""The events exchange.

``publish`` wraps an event in an envelope stamped with the current namespace
and time; ``forward`` distributes an envelope made elsewhere (a shim, another
daemon) as it is; ``subscribe`` yields the envelopes that match any of its
filters, in containerd's filter syntax over ``topic``, ``namespace`` and
``event.<field>`` (the fields of the decoded event message).

Every subscriber has its own unbounded queue, as containerd's broadcaster
does, so a slow subscriber never holds up a publisher or the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any as TypingAny

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from arun import filters, identifiers, namespaces

# Imported for their descriptors: event filters decode the messages by type URL.
from arun.api.containerd.events import (  # noqa: F401
    container_pb2,
    content_pb2,
    image_pb2,
    namespace_pb2,
    sandbox_pb2,
    snapshot_pb2,
    task_pb2,
)
from arun.core import typeurl
from arun.core.events import Envelope
from arun.errdefs import InvalidArgumentError

log = logging.getLogger(__name__)


def validate_topic(topic: str) -> None:
    if not topic:
        raise InvalidArgumentError(f"envelope topic {topic!r}: must not be empty")
    if topic[0] != "/":
        raise InvalidArgumentError(f"envelope topic {topic!r}: must start with '/'")
    if len(topic) == 1:
        raise InvalidArgumentError(f"envelope topic {topic!r}: must have at least one component")
    for component in topic[1:].split("/"):
        try:
            identifiers.validate(component)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(
                f"envelope topic {topic!r}: failed validation on component {component!r}: {e}"
            ) from None


def validate_envelope(env: Envelope) -> None:
    try:
        identifiers.validate(env.namespace)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"event envelope has invalid namespace: {e}") from None
    validate_topic(env.topic)
    if env.timestamp is None or env.timestamp.timestamp() == 0:
        raise InvalidArgumentError("timestamp must be set on forwarded event")


def type_url_of(msg: Message) -> str:
    """containerd's type URL of a protobuf message: its full name, without a host prefix."""
    name: str = msg.DESCRIPTOR.full_name
    return name


def marshal(event: object) -> typeurl.Any:
    if isinstance(event, typeurl.Any):
        return event
    if isinstance(event, Message):
        return typeurl.Any(type_url_of(event), event.SerializeToString())
    raise InvalidArgumentError(f"cannot marshal event of type {type(event).__name__}")


def unmarshal(value: typeurl.Any) -> Message | None:
    """The message in ``value`` if its type is known here, else None."""
    name = value.type_url.rsplit("/", 1)[-1]
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return None
    msg: Message = message_factory.GetMessageClass(desc)()
    try:
        msg.ParseFromString(value.value)
    except DecodeError:
        return None
    return msg


def _message_field(msg: Message, path: Sequence[str]) -> str | None:
    if not path:
        return None
    fd = msg.DESCRIPTOR.fields_by_name.get(path[0])
    if fd is None:
        return None
    value: TypingAny = getattr(msg, fd.name)
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key = ".".join(path[1:])
        return str(value[key]) if key in value else None
    if fd.is_repeated:
        return None
    if fd.message_type is not None:
        if not msg.HasField(fd.name):
            return None
        return _message_field(value, path[1:])
    if len(path) != 1:
        return None
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return None
    return str(value) if value != "" else None


def adapt(env: Envelope) -> filters.Adaptor:
    decoded: list[Message | None] = []

    def field(path: Sequence[str]) -> str | None:
        if not path:
            return None
        match path[0]:
            case "namespace":
                return env.namespace or None
            case "topic":
                return env.topic or None
            case "event":
                if not decoded:
                    decoded.append(unmarshal(env.event))
                msg = decoded[0]
                return None if msg is None else _message_field(msg, path[1:])
        return None

    return field


class Subscription:
    """An async iterator of envelopes; ``close()`` (or leaving ``async with``) ends it."""

    def __init__(self, exchange: Exchange, flt: filters.Filter) -> None:
        self._exchange = exchange
        self._filter = flt
        self._queue: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self._closed = False

    def _offer(self, env: Envelope) -> None:
        if self._closed:
            return
        try:
            ok = self._filter.match(adapt(env))
        except Exception:  # a filter must never break the publisher
            log.exception("event filter failed")
            return
        if ok:
            self._queue.put_nowait(env)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._exchange._subscribers.discard(self)
            self._queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Envelope:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        env = await self._queue.get()
        if env is None:
            raise StopAsyncIteration
        return env

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def pending(self) -> int:
        return self._queue.qsize()


class Exchange:
    """``core.events.Publisher``, ``Forwarder`` and ``Subscriber`` in one."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    async def publish(self, topic: str, event: object) -> None:
        ns = namespaces.required()
        validate_topic(topic)
        env = Envelope(timestamp=datetime.now(UTC), namespace=ns, topic=topic, event=marshal(event))
        self._broadcast(env)
        log.debug("event published", extra={"topic": topic, "event_type": env.event.type_url})

    async def forward(self, envelope: Envelope) -> None:
        validate_envelope(envelope)
        self._broadcast(envelope)
        log.debug("event forwarded", extra={"topic": envelope.topic, "event_type": envelope.event.type_url})

    def subscribe(self, *filter_strings: str) -> Subscription:
        flt = filters.parse_all(filter_strings)
        sub = Subscription(self, flt)
        self._subscribers.add(sub)
        return sub

    def _broadcast(self, env: Envelope) -> None:
        for sub in list(self._subscribers):
            sub._offer(env)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def begin_shutdown(self) -> None:
        """The daemon is stopping: end every subscription (their streams finish cleanly)."""
        for sub in list(self._subscribers):
            sub.close()

    async def close(self) -> None:
        self.begin_shutdown()
