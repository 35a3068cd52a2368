"""``arun.Client``: containerd's concepts from async Python, over a daemon's socket.

::

    async with arun.Client("/run/arun/arun.sock", namespace="default") as c:
        await c.import_archive("busybox.tar")          # or: await c.pull("docker.io/library/busybox")
        ctr = await c.containers.create("hello", "docker.io/library/busybox:latest",
                                        command=["echo", "hi"])
        out = io.BytesIO()
        task = await ctr.new_task(stdout=out)
        await task.start()
        status = await task.wait()
        await task.delete()
        await ctr.delete()

The same code runs against containerd (1.6 and later) and against arun, and
in-process against an embedded arun (``arun.Runtime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import IO, TypeVar

from google.protobuf.message import Message

from arun import errdefs, identifiers
from arun.client import _convert
from arun.client.cio import IOSet
from arun.client.containers import Containers
from arun.client.content import Content
from arun.client.images import Images, Platform
from arun.client.snapshots import Snapshots
from arun.client.tasks import Task
from arun.client.transport import DEFAULT_ADDRESS, BidiStream, CallOptions, GrpcTransport, Transport
from arun.client.types import Event, ImageInfo, Namespace, PullProgress, RuncOptions, TaskState, Version

__all__ = ["Client"]

M = TypeVar("M", bound=Message)

DEFAULT_SNAPSHOTTER = "overlayfs"
DEFAULT_RUNTIME = _convert.RUNC_RUNTIME
LEASE_EXPIRY = datetime.timedelta(hours=24)

_UNSET = object()

# The lease of the operation in progress (client.lease()), carried like containerd's ctx lease.
_lease: ContextVar[str | None] = ContextVar("arun_client_lease", default=None)


class Client:
    """An async client for arun or containerd.

    ``address``: a unix socket path, ``unix:///path`` or ``tcp://host:port``.
    ``namespace``: every call is made in it (``with_namespace`` for another).
    ``timeout``: default seconds per call (None: no limit; waits are never limited).
    ``runtime``/``runtime_options``/``snapshotter``: defaults for new containers.
    ``fifo_dir``: where stdio FIFOs are made (default ``/run/arun/fifo``).
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        namespace: str = "default",
        *,
        timeout: float | None = None,
        transport: Transport | None = None,
        snapshotter: str = DEFAULT_SNAPSHOTTER,
        runtime: str = DEFAULT_RUNTIME,
        runtime_options: RuncOptions | None = None,
        fifo_dir: str | None = None,
    ) -> None:
        identifiers.validate(namespace)
        self.address = address
        self.namespace = namespace
        self.timeout = timeout
        self.snapshotter = snapshotter
        self.runtime = runtime
        self.runtime_options = runtime_options
        self.fifo_dir = fifo_dir
        self._transport: Transport = transport if transport is not None else GrpcTransport(address)
        self._owns_transport = True
        # Stdio sets of processes still open; close() closes them (FIFOs, their directory).
        self._iosets: set[IOSet] = set()
        self.images = Images(self)
        self.containers = Containers(self)
        self.content = Content(self)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close stdio still open (its FIFO directories go) and, if this client owns it, the connection."""
        for io in list(self._iosets):
            io.close()
        if self._owns_transport:
            await self._transport.close()

    def with_namespace(self, namespace: str) -> Client:
        """A client for ``namespace`` sharing this one's connection (closing it leaves the connection)."""
        identifiers.validate(namespace)
        other = Client.__new__(Client)
        other.__dict__.update(self.__dict__)
        other.namespace = namespace
        other._owns_transport = False
        other._iosets = set()
        other.images = Images(other)
        other.containers = Containers(other)
        other.content = Content(other)
        return other

    # -- calls ---------------------------------------------------------------------------------------

    def _opts(self, timeout: float | object | None = _UNSET) -> CallOptions:
        t = self.timeout if timeout is _UNSET else timeout
        return CallOptions(
            namespace=self.namespace,
            lease=_lease.get(),
            timeout=float(t) if isinstance(t, int | float) else None,
        )

    async def _unary(
        self,
        path: str,
        request: Message,
        reply_type: type[M],
        *,
        call_timeout: float | object | None = _UNSET,
    ) -> M:
        return await self._transport.unary(path, request, reply_type, self._opts(call_timeout))

    def _stream(
        self, path: str, request: Message, reply_type: type[M]
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[M]]:
        return self._transport.server_stream(path, request, reply_type, self._opts(None))

    def _bidi(
        self, path: str, request_type: type[Message], reply_type: type[Message]
    ) -> contextlib.AbstractAsyncContextManager[BidiStream]:
        return self._transport.bidi(path, request_type, reply_type, self._opts(None))

    # -- leases --------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, *, expire: datetime.timedelta = LEASE_EXPIRY) -> AsyncIterator[str]:
        """Hold everything created inside the block against garbage collection until it ends.

        Nested blocks reuse the outer lease. The lease is deleted on exit, as
        containerd's ``client.WithLease`` does.
        """
        current = _lease.get()
        if current is not None:
            yield current
            return
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.leases.v1 import leases_pb2

        lid = f"arun-client-{os.urandom(8).hex()}"
        until = datetime.datetime.now(datetime.UTC) + expire
        await self._unary(
            "/containerd.services.leases.v1.Leases/Create",
            leases_pb2.CreateRequest(
                id=lid, labels={"containerd.io/gc.expire": until.strftime("%Y-%m-%dT%H:%M:%SZ")}
            ),
            leases_pb2.CreateResponse,
        )
        token = _lease.set(lid)
        failed = True
        try:
            yield lid
            failed = False
        finally:
            _lease.reset(token)
            # After a failure, wait for garbage collection: what the block made is gone on return.
            with contextlib.suppress(errdefs.ArunError):
                await self._unary(
                    "/containerd.services.leases.v1.Leases/Delete",
                    leases_pb2.DeleteRequest(id=lid, sync=failed),
                    empty_pb2.Empty,
                )

    # -- daemon -----------------------------------------------------------------------------------------

    async def version(self) -> Version:
        """The daemon's version and revision."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.version.v1 import version_pb2

        r = await self._unary(
            "/containerd.services.version.v1.Version/Version", empty_pb2.Empty(), version_pb2.VersionResponse
        )
        return Version(version=r.version, revision=r.revision)

    async def namespaces(self) -> list[Namespace]:
        """Every namespace of the daemon, with its labels."""
        from arun.api.containerd.services.namespaces.v1 import namespace_pb2

        r = await self._unary(
            "/containerd.services.namespaces.v1.Namespaces/List",
            namespace_pb2.ListNamespacesRequest(),
            namespace_pb2.ListNamespacesResponse,
        )
        return sorted((Namespace(n.name, dict(n.labels)) for n in r.namespaces), key=lambda n: n.name)

    async def delete_namespace(self, name: str) -> None:
        """Remove namespace ``name``; it must be empty (FailedPreconditionError otherwise)."""
        from google.protobuf import empty_pb2

        from arun.api.containerd.services.namespaces.v1 import namespace_pb2

        await self._unary(
            "/containerd.services.namespaces.v1.Namespaces/Delete",
            namespace_pb2.DeleteNamespaceRequest(name=name),
            empty_pb2.Empty,
        )

    def snapshots(self, snapshotter: str | None = None) -> Snapshots:
        """The snapshot service for ``snapshotter`` (default: the client's)."""
        return Snapshots(self, snapshotter or self.snapshotter)

    # -- images ------------------------------------------------------------------------------------------

    async def pull(
        self,
        ref: str,
        *,
        progress: Callable[[PullProgress], object] | None = None,
        unpack: bool = True,
        snapshotter: str | None = None,
        platform: str | Platform | None = None,
        plain_http: bool = False,
        hosts_dir: str = "",
        credentials: tuple[str, str] | None = None,
    ) -> ImageInfo:
        """Pull ``ref`` (normalised as docker does) and unpack it; the image record.

        ``progress`` is called with a ``PullProgress`` for every change. The
        daemon pulls when it has a transfer service (arun, containerd >= 1.7);
        otherwise the client resolves and fetches itself (containerd 1.6).
        ``credentials``: (user, password or token) for the registry.
        """
        from arun.client.pull import pull

        plat = Platform.parse(platform) if isinstance(platform, str) else platform
        return await pull(
            self,
            ref,
            progress=progress,
            unpack=unpack,
            snapshotter=snapshotter,
            platform=plat,
            plain_http=plain_http,
            hosts_dir=hosts_dir,
            credentials=credentials,
        )

    async def import_archive(
        self,
        path: str | Path,
        *,
        base_name: str | None = None,
        index_name: str | None = None,
        platform: str | Platform | None = None,
        all_platforms: bool = False,
        unpack: bool = True,
        snapshotter: str | None = None,
        progress: Callable[[PullProgress], object] | None = None,
    ) -> list[ImageInfo]:
        """Import an OCI layout or Docker image tar (``ctr images import``); the images made."""
        from arun.client.archive import import_archive

        plat = Platform.parse(platform) if isinstance(platform, str) else platform
        return await import_archive(
            self,
            path,
            base_name=base_name,
            index_name=index_name,
            platform=plat,
            all_platforms=all_platforms,
            unpack=unpack,
            snapshotter=snapshotter,
            progress=progress,
        )

    async def export_archive(
        self,
        out: str | Path | IO[bytes],
        names: list[str],
        *,
        platform: str | Platform | None = None,
        all_platforms: bool = False,
    ) -> int:
        """Write the named images as an OCI layout tar to ``out`` (a path or binary file); bytes."""
        from arun.client.archive import export_archive

        plat = Platform.parse(platform) if isinstance(platform, str) else platform
        if isinstance(out, str | Path):
            p = Path(out)
            try:
                return await export_archive(self, p, names, platform=plat, all_platforms=all_platforms)
            except BaseException:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(p.unlink)
                raise
        return await export_archive(self, out, names, platform=plat, all_platforms=all_platforms)

    # -- tasks ---------------------------------------------------------------------------------------------

    async def tasks(self) -> list[TaskState]:
        """Every task in the namespace."""
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        r = await self._unary(
            "/containerd.services.tasks.v1.Tasks/List",
            tasks_pb2.ListTasksRequest(),
            tasks_pb2.ListTasksResponse,
        )
        return sorted((_convert.task_state(t) for t in r.tasks), key=lambda t: t.id)

    async def task(self, container_id: str) -> Task:
        """The task of ``container_id`` (no stdio attached); NotFoundError when none."""
        from arun.api.containerd.services.tasks.v1 import tasks_pb2

        r = await self._unary(
            "/containerd.services.tasks.v1.Tasks/Get",
            tasks_pb2.GetRequest(container_id=container_id),
            tasks_pb2.GetResponse,
        )
        spec: dict[str, object] = {}
        with contextlib.suppress(errdefs.NotFoundError):
            spec = dict((await self.containers.info(container_id)).spec)
        return Task(self, container_id, None, int(r.process.pid), spec)

    # -- events --------------------------------------------------------------------------------------------

    async def events(self, *filters: str) -> AsyncIterator[Event]:
        """Events as they happen (all namespaces unless a filter says otherwise), until the loop breaks.

        Filters use containerd's syntax: ``topic~="/tasks/"``, ``namespace==default``;
        an event passes if any filter matches, and within one filter the
        comma-separated conditions must all match (``namespace==a,topic~="/tasks/"``).
        """
        from arun.api.containerd.events import (  # noqa: F401  (registers the event types)
            container_pb2,
            content_pb2,
            image_pb2,
            namespace_pb2,
            snapshot_pb2,
            task_pb2,
        )
        from arun.api.containerd.services.events.v1 import events_pb2

        req = events_pb2.SubscribeRequest(filters=list(filters))
        async with self._transport.server_stream(
            "/containerd.services.events.v1.Events/Subscribe", req, events_pb2.Envelope, CallOptions()
        ) as envelopes:
            async for env in envelopes:
                kind, data = _convert.decode_any(env.event)
                yield Event(
                    timestamp=_convert.timestamp(env.timestamp),
                    namespace=env.namespace,
                    topic=env.topic,
                    type=kind,
                    data=data,
                )


def check_id(value: str, what: str = "id") -> str:
    try:
        identifiers.validate(value)
    except errdefs.InvalidArgumentError as e:
        raise errdefs.InvalidArgumentError(f"{what} {value!r}: {e}") from None
    return value
