"""The CRI service's state and the plumbing its RPCs share (containerd's ``criService``).

The RPCs themselves live in one module each (``sandbox_run.py``,
``container_create.py`` …) as functions of a :class:`CRIService`. This module
holds what they share: the configuration, the stores in-process (metadata,
tasks, transfer, CNI), the in-memory sandbox and container stores, the
directories, task exit monitors, the container event stream and the tasks
started in the background.

Every CRI object lives in the ``k8s.io`` namespace; background tasks start in
a fresh context (no request deadline) and enter the namespace themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

from arun import namespaces
from arun.api.containerd.events import task_pb2 as task_events
from arun.api.cri.runtime.v1 import api_pb2
from arun.cni import PodNetwork
from arun.core.containers import Container as ContainerRecord
from arun.core.runtime import TASK_OOM, Exit, TaskRuntime
from arun.cri.config import CRIConfig
from arun.cri.constants import K8S_NAMESPACE
from arun.cri.images.store import ImageIndex
from arun.cri.store.container import Container, ContainerStore
from arun.cri.store.sandbox import Sandbox, SandboxState, SandboxStore
from arun.cri.streaming import StreamingServer
from arun.errdefs import NotFoundError, UnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Exit reasons kubelet reads (containerd's).
REASON_COMPLETED = "Completed"
REASON_ERROR = "Error"
REASON_OOM = "OOMKilled"
# Status reported for a task whose shim vanished.
UNKNOWN_EXIT_CODE = 255
# How long an exit waits for the container's output to be logged.
IO_DRAIN_TIMEOUT = 2.0


class ContainerRecords(Protocol):
    async def get(self, id: str) -> ContainerRecord: ...

    async def list(self, *filters: str) -> list[ContainerRecord]: ...

    async def create(self, container: ContainerRecord) -> ContainerRecord: ...

    async def update(self, container: ContainerRecord, *fieldpaths: str) -> ContainerRecord: ...

    async def delete(self, id: str) -> None: ...


class Metadata(Protocol):
    """What the CRI plugin uses of the metadata plugin's instance."""

    @property
    def containers(self) -> Any: ...

    @property
    def images(self) -> Any: ...

    @property
    def leases(self) -> Any: ...

    def snapshotter(self, name: str) -> Any: ...

    def content_store(self) -> Any: ...


class Subscriber(Protocol):
    def subscribe(self, *filters: str) -> Any: ...


class EventBroadcaster:
    """GetContainerEvents subscribers, each with its own queue (slow readers drop nothing
    others see; a queue past ``limit`` events drops its oldest)."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._queues: set[asyncio.Queue[api_pb2.ContainerEventResponse | None]] = set()

    def publish(self, event: api_pb2.ContainerEventResponse) -> None:
        for q in list(self._queues):
            if q.qsize() >= self.limit:
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[api_pb2.ContainerEventResponse]:
        q: asyncio.Queue[api_pb2.ContainerEventResponse | None] = asyncio.Queue()
        self._queues.add(q)
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            self._queues.discard(q)

    def close(self) -> None:
        for q in list(self._queues):
            q.put_nowait(None)


class CRIService:
    def __init__(
        self,
        config: CRIConfig,
        *,
        root: Path,
        state: Path,
        meta: Metadata,
        runtime: TaskRuntime,
        network: PodNetwork,
        transfer: Any = None,
        subscriber: Subscriber | None = None,
        daemon_root: Path | None = None,
        collect: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.config = config
        self.root = root
        self.state = state
        self.daemon_root = daemon_root or root.parent
        self.meta = meta
        self.runtime = runtime
        self.network = network
        self.transfer = transfer
        self.subscriber = subscriber
        # One garbage collection, waited for (RemoveImage of an image's last name, as containerd).
        self.collect = collect
        self.sandboxes = SandboxStore()
        self.containers = ContainerStore()
        self.events = EventBroadcaster()
        self.streaming: StreamingServer | None = None
        self.images = ImageIndex(meta.images, meta.content_store())
        self._tasks: set[asyncio.Task[Any]] = set()
        self._monitors: dict[str, asyncio.Task[None]] = {}
        self.ready = False
        self.closing = False
        # Pulls of one reference in flight, shared by concurrent callers.
        self.pulls: dict[str, asyncio.Future[str]] = {}
        self.started_at = time.time_ns()
        self._userns_probe: asyncio.Future[str] | None = None

    async def userns_unsupported(self) -> str:
        """Why pods cannot have their own user namespace on this host ("" if they can),
        probed once on the filesystem of the daemon's root (where the snapshots are)."""
        if self._userns_probe is None:
            from arun.cri import userns

            self._userns_probe = asyncio.ensure_future(asyncio.to_thread(userns.probe, str(self.daemon_root)))
        return await asyncio.shield(self._userns_probe)

    # -- directories ---------------------------------------------------------------------------

    def sandbox_root(self, id: str) -> Path:
        return self.root / "sandboxes" / id

    def sandbox_state(self, id: str) -> Path:
        return self.state / "sandboxes" / id

    def container_root(self, id: str) -> Path:
        return self.root / "containers" / id

    def container_state(self, id: str) -> Path:
        return self.state / "containers" / id

    def snapshotter_for(self, handler: str = "") -> str:
        try:
            rt = self.config.runtime(handler)
        except Exception:
            return self.config.containerd.snapshotter
        return rt.snapshotter or self.config.containerd.snapshotter

    # -- background work -------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, T], name: str = "") -> asyncio.Task[T]:
        """Run ``coro`` detached from the request: no deadline, namespace ``k8s.io``."""

        async def runner() -> T:
            with namespaces.use(K8S_NAMESPACE):
                return await coro

        task = asyncio.get_running_loop().create_task(
            runner(), name=name or None, context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def detached(self, fn: Callable[[], Awaitable[T]], name: str = "") -> T:
        """Run ``fn`` detached (a client that gives up does not cancel it) and wait for it."""

        async def call() -> T:
            return await fn()

        task = self.spawn(call(), name)
        return await asyncio.shield(task)

    # -- events ----------------------------------------------------------------------------------

    def emit(self, container_id: str, sandbox_id: str, kind: api_pb2.ContainerEventType) -> None:
        """A GetContainerEvents event, with the pod's status and its containers' statuses."""
        from arun.cri.container_status import container_status_proto
        from arun.cri.sandbox_status import pod_status_proto

        ev = api_pb2.ContainerEventResponse(
            container_id=container_id, container_event_type=kind, created_at=time.time_ns()
        )
        sb = self.sandboxes.find(sandbox_id)
        if sb is not None and sb.state != SandboxState.INIT:
            ev.pod_sandbox_status.CopyFrom(pod_status_proto(self, sb))
            for c in self.containers.by_sandbox(sandbox_id):
                if c.status.get().created_at:
                    ev.containers_statuses.append(container_status_proto(self, c))
        self.events.publish(ev)

    # -- exits -----------------------------------------------------------------------------------

    def monitor_sandbox(self, sandbox: Sandbox) -> None:
        task = sandbox.task
        if task is None:
            return

        async def watch() -> None:
            exit = await self._wait(sandbox.id, task)
            await self.handle_sandbox_exit(sandbox, exit)

        self._monitors[sandbox.id] = self.spawn(watch(), f"sandbox-exit-{sandbox.id[:12]}")

    def monitor_container(self, container: Container) -> None:
        task = container.task
        if task is None:
            return

        async def watch() -> None:
            exit = await self._wait(container.id, task)
            await self.handle_container_exit(container, exit)

        self._monitors[container.id] = self.spawn(watch(), f"container-exit-{container.id[:12]}")

    async def _wait(self, id: str, task: Any) -> Exit:
        while True:
            try:
                result: Exit = await task.wait()
                return result
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # The shim connection is gone: the runtime manager cleans up after it; see whether
                # the task still exists, else report an unknown exit.
                log.info("waiting for task %s failed: %s", id, e)
                try:
                    state = await self.runtime.get(id)
                    await asyncio.sleep(0.5)
                    task = state
                    continue
                except NotFoundError:
                    return Exit(0, UNKNOWN_EXIT_CODE, None)
                except Exception:
                    await asyncio.sleep(1.0)

    async def handle_sandbox_exit(self, sandbox: Sandbox, exit: Exit) -> None:
        async with sandbox.lock:
            if sandbox.task is not None:
                with contextlib.suppress(NotFoundError, UnavailableError):
                    await self.runtime.delete(sandbox.id)
                sandbox.task = None
            sandbox.mark_exited(exit.status, _ns(exit))
        self._monitors.pop(sandbox.id, None)
        self.emit(sandbox.id, sandbox.id, api_pb2.CONTAINER_STOPPED_EVENT)

    async def handle_container_exit(self, container: Container, exit: Exit) -> None:
        if container.task is not None:
            try:
                await self.runtime.delete(container.id)
            except (NotFoundError, UnavailableError):
                pass
            except Exception as e:
                log.warning("deleting the task of container %s failed: %s", container.id, e)
            container.task = None
        if container.io is not None:
            try:
                await asyncio.wait_for(container.io.wait(), IO_DRAIN_TIMEOUT)
            except TimeoutError:
                log.info("output of container %s not drained after exit", container.id)
        st = container.status.get()
        if not st.finished_at:
            reason = st.reason
            if container.oom_killed:
                reason = REASON_OOM
            elif not reason:
                reason = REASON_COMPLETED if exit.status == 0 else REASON_ERROR
            await asyncio.to_thread(
                container.status.update,
                pid=0,
                finished_at=_ns(exit),
                exit_code=exit.status,
                reason=reason,
            )
        if container.io is not None:
            container.io.close()
            container.io = None
        container.stopped.set()
        self._monitors.pop(container.id, None)
        self.emit(container.id, container.sandbox_id, api_pb2.CONTAINER_STOPPED_EVENT)

    async def watch_oom(self) -> None:
        """Mark containers the kernel OOM-killed (``/tasks/oom`` from their shims)."""
        if self.subscriber is None:
            return
        sub = self.subscriber.subscribe(f'topic=="{TASK_OOM}",namespace=="{K8S_NAMESPACE}"')
        try:
            async for env in sub:
                try:
                    ev = task_events.TaskOOM.FromString(env.event.value)
                except Exception:
                    continue
                c = self.containers.find(ev.container_id)
                if c is None:
                    continue
                c.oom_killed = True
                st = c.status.get()
                if st.finished_at and st.reason != REASON_OOM:
                    await asyncio.to_thread(c.status.update, reason=REASON_OOM)
        finally:
            close = getattr(sub, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        from arun.cri.container_create import rro_supported

        await asyncio.to_thread(self._mkdirs)
        await asyncio.to_thread(rro_supported)  # asks `runc features` once, off the loop
        from arun.cri.restart import recover

        with namespaces.use(K8S_NAMESPACE):
            await recover(self)
        self.spawn(self.watch_oom(), "cri-oom-watch")
        self.ready = True

    def _mkdirs(self) -> None:
        for d in (
            self.root / "sandboxes",
            self.root / "containers",
            self.state / "sandboxes",
            self.state / "containers",
        ):
            d.mkdir(parents=True, exist_ok=True, mode=0o711)

    async def close(self) -> None:
        self.closing = True
        self.events.close()
        if self.streaming is not None:
            with contextlib.suppress(Exception):
                await self.streaming.stop()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self.containers.list():
            if c.io is not None:
                c.io.close(remove=False)
                c.io = None


def _ns(exit: Exit) -> int:
    if exit.timestamp is not None:
        return int(exit.timestamp.timestamp() * 1e9)
    return time.time_ns()


def ensure_dir(path: Path, mode: int = 0o711) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    with contextlib.suppress(OSError):
        os.chmod(path, mode)
