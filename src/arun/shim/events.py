"""Task events from the shim to the daemon, in order.

Every event goes through one FIFO queue drained by one forwarder task, so the daemon sees them in
the order the shim produced them — the order runtime v2 requires (create → start → exit → delete;
exec-added → exec-started → exit). Each is sent as ``containerd.services.events.ttrpc.v1.Events/
Forward`` to the daemon's ttrpc address (``TTRPC_ADDRESS``), wrapped in an Envelope whose Any has
the bare full name as type URL (``containerd.events.TaskExit``), as containerd's typeurl writes it.

Failures are retried as the Go publisher does — 5 s per call, one immediate reconnect when the
connection was closed, then up to 5 attempts with a delay of ``attempt`` seconds — but in place,
so a failed event never lets a later one overtake it. An event that could not be delivered within
its retry budget is dropped with an error in the log; the daemon learns the truth from ``State``
and ``Wait`` when it reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Protocol

from arun.ttrpc.lite import full_name

Message = Any  # a lite message (arun.shim.litepb) or a generated one

log = logging.getLogger(__name__)

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
NAMESPACE_HEADER = "containerd-namespace-ttrpc"
CALL_TIMEOUT = 5.0
MAX_ATTEMPTS = 5

TOPICS: dict[str, str] = {
    "containerd.events.TaskCreate": "/tasks/create",
    "containerd.events.TaskStart": "/tasks/start",
    "containerd.events.TaskOOM": "/tasks/oom",
    "containerd.events.TaskExit": "/tasks/exit",
    "containerd.events.TaskDelete": "/tasks/delete",
    "containerd.events.TaskExecAdded": "/tasks/exec-added",
    "containerd.events.TaskExecStarted": "/tasks/exec-started",
    "containerd.events.TaskPaused": "/tasks/paused",
    "containerd.events.TaskResumed": "/tasks/resumed",
    "containerd.events.TaskCheckpointed": "/tasks/checkpointed",
}


def topic_of(event: Message) -> str:
    name = full_name(type(event))
    try:
        return TOPICS[name]
    except KeyError:
        raise ValueError(f"no topic for event type {name!r}") from None


def envelope(namespace: str, topic: str, event: Message, timestamp_ns: int) -> bytes:
    """A serialized ForwardRequest for ``event``."""
    from arun.shim import litepb

    req = litepb.containerd_services_events_ttrpc_v1_ForwardRequest()
    env = req.envelope
    env.timestamp.seconds, env.timestamp.nanos = divmod(timestamp_ns, 1_000_000_000)
    env.namespace = namespace
    env.topic = topic
    env.event.type_url = full_name(type(event))
    env.event.value = event.SerializeToString()
    data: bytes = req.SerializeToString()
    return data


class Forwarder(Protocol):
    """Delivers one serialized ForwardRequest; raises on failure."""

    async def forward(self, request: bytes, namespace: str) -> None: ...

    async def close(self) -> None: ...


class TTRPCForwarder:
    """``Events/Forward`` over a ttrpc connection to ``address``, reconnecting as needed."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._client: object | None = None
        self._dialling: asyncio.Task[None] | None = None

    def dial_early(self) -> None:
        """Connect to the daemon now, in the background: a shim's first event (TaskCreate) is
        sent while the daemon already handles the next request (Start), and should not also
        cost it a new connection then. A failure here is forgotten: ``forward`` dials again."""
        if self._dialling is None and self._client is None:
            self._dialling = asyncio.get_running_loop().create_task(self._dial_quietly())

    async def _dial_quietly(self) -> None:
        try:
            await self._connect()
        except Exception as exc:
            log.debug("connecting to the daemon for events failed: %s", exc)

    async def _dialled(self) -> None:
        task, self._dialling = self._dialling, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _connect(self) -> object:
        from arun.errdefs import grpc as errgrpc
        from arun.ttrpc import Client

        client = await Client.connect(self.address, timeout=CALL_TIMEOUT, from_status=errgrpc.from_code)
        self._client = client
        return client

    async def forward(self, request: bytes, namespace: str) -> None:
        from arun.ttrpc import Client, ClosedError

        await self._dialled()
        for reconnect in (False, True):
            client = self._client
            if client is None or getattr(client, "closed", True):
                client = await self._connect()
            assert isinstance(client, Client)
            try:
                await client.call(
                    EVENTS_SERVICE,
                    "Forward",
                    request,
                    timeout=CALL_TIMEOUT,
                    metadata=[(NAMESPACE_HEADER, namespace)],
                )
                return
            except ClosedError:
                self._client = None
                if reconnect:
                    raise

    async def close(self) -> None:
        if self._dialling is not None:
            self._dialling.cancel()
            await self._dialled()
        client, self._client = self._client, None
        if client is not None:
            from arun.ttrpc import Client

            assert isinstance(client, Client)
            await client.close()


class EventQueue:
    """The shim's single ordered event queue; ``send`` never blocks, ``run`` forwards."""

    def __init__(
        self,
        forwarder: Forwarder | None,
        namespace: str,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        retry_delay: float = 1.0,
    ) -> None:
        self.forwarder = forwarder
        self.namespace = namespace
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self._queue: collections.deque[tuple[str, Message, int]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.sent = 0
        self.dropped = 0

    def send(self, event: Message, *, timestamp_ns: int | None = None) -> None:
        """Queue ``event`` (its topic follows from its type)."""
        self._queue.append((topic_of(event), event, timestamp_ns or time.time_ns()))
        self._idle.clear()
        self._wakeup.set()

    def dial_early(self) -> None:
        """Let the forwarder connect before the first event (if it can)."""
        dial = getattr(self.forwarder, "dial_early", None)
        if dial is not None:
            dial()

    def pending(self) -> list[tuple[str, Message]]:
        return [(t, e) for t, e, _ in self._queue]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="shim-events")

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            topic, event, ts = self._queue[0]
            await self._deliver(topic, event, ts)
            self._queue.popleft()

    async def _deliver(self, topic: str, event: Message, ts: int) -> None:
        if self.forwarder is None:
            self.dropped += 1
            return
        request = envelope(self.namespace, topic, event, ts)
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self.forwarder.forward(request, self.namespace)
                self.sent += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == self.max_attempts:
                    log.error("dropping event %s after %d attempts: %s", topic, attempt, exc)
                    self.dropped += 1
                    return
                log.warning("publish %s failed (attempt %d): %s", topic, attempt, exc)
                await asyncio.sleep(self.retry_delay * attempt)

    async def flush(self, grace: float) -> bool:
        """Wait until everything queued has been delivered (or dropped); False on timeout."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, grace: float = 5.0) -> None:
        """Deliver what is queued (up to ``grace`` seconds), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(grace):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.forwarder is not None:
            await self.forwarder.close()
