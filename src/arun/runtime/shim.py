"""A task in a shim: one ttrpc connection speaking ``containerd.task.v3.Task`` or ``v2``.

The API version follows the shim's bootstrap reply (version 3 → ``v3``, 2 → ``v2``);
an UNIMPLEMENTED answer to ``Connect`` or ``Create`` on ``v3`` drops the connection to
``v2`` and retries, as containerd's ``clientVersionDowngrader`` does (the two services
have the same messages). Every call carries the task's namespace in the
``containerd-namespace-ttrpc`` metadata and the remaining request deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from arun import deadline, identifiers, namespaces
from arun.api.containerd.runtime.task.v2 import shim_pb2 as task_v2
from arun.api.containerd.runtime.task.v3 import shim_pb2 as task_v3
from arun.core.runtime import (
    AnyValue,
    CreateOpts,
    ExecOpts,
    Exit,
    ProcessInfo,
    State,
    Status,
)
from arun.errdefs import NotFoundError, UnavailableError, UnimplementedError
from arun.errdefs import grpc as errgrpc
from arun.runtime.binary import BootstrapResult, ShimBinary
from arun.runtime.bundle import Bundle
from arun.ttrpc import Client, ClosedError, ServiceStub
from arun.ttrpc.client import unix_address

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 100.0  # dialling a shim socket (containerd's AnonDialer timeout)
SHUTDOWN_TIMEOUT = 3.0  # io.containerd.timeout.shim.shutdown

_SERVICES: dict[int, ServiceDescriptor] = {
    3: task_v3.DESCRIPTOR.services_by_name["Task"],
    2: task_v2.DESCRIPTOR.services_by_name["Task"],
}


def _timestamp(msg: Any, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    ts = getattr(msg, name)
    if ts.seconds < 0 or (ts.seconds == 0 and ts.nanos == 0):
        return None  # unset, or Go's zero time (0001-01-01)
    result: datetime = ts.ToDatetime(tzinfo=UTC)
    return result


def _any(stub_request: Any, name: str, value: AnyValue | None) -> None:
    if value is not None:
        target = getattr(stub_request, name)
        target.type_url = value.type_url
        target.value = value.value


class ShimGoneError(UnavailableError):
    """The shim's connection closed (the shim exited or was killed)."""


class ShimConnection:
    """A ttrpc client and the Task API version spoken on it."""

    def __init__(self, client: Client, version: int, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.version = 3 if version >= 3 else 2
        self.stub = ServiceStub(client, _SERVICES[self.version])

    @classmethod
    async def connect(
        cls,
        result: BootstrapResult,
        namespace: str,
        on_close: Callable[[], object],
        *,
        timeout: float = CONNECT_TIMEOUT,  # noqa: ASYNC109 - the dial timeout
    ) -> ShimConnection:
        address = result.address
        if not address.startswith("unix://") and not address.startswith("/"):
            address = "@" + address  # a bare name is an abstract socket (containerd AnonDialer)
        client = await Client.connect(
            unix_address(address),
            timeout=timeout,
            from_status=errgrpc.from_code,
            on_close=on_close,
            deadline=deadline.remaining,
            metadata=lambda: [(namespaces.TTRPC_HEADER, namespace)],
        )
        return cls(client, result.version, namespace)

    def downgrade(self) -> bool:
        """Switch to the v2 API; False if already there."""
        if self.version == 2:
            return False
        log.info("shim does not serve task v3; using task v2", extra={"namespace": self.namespace})
        self.version = 2
        self.stub = ServiceStub(self.client, _SERVICES[2])
        return True

    def request(self, method: str, **fields: Any) -> Any:
        return self.stub.methods[method].request_type(**fields)

    async def call(self, method: str, request: Any, *, downgrade: bool = False) -> Any:
        try:
            try:
                return await getattr(self.stub, method)(request)
            except UnimplementedError:
                if downgrade and self.downgrade():
                    req = self.stub.methods[method].request_type.FromString(request.SerializeToString())
                    return await getattr(self.stub, method)(req)
                raise
        except ClosedError as e:
            raise ShimGoneError(f"shim connection closed ({method}): the shim exited") from e

    @property
    def closed(self) -> bool:
        return self.client.closed

    async def close(self) -> None:
        await self.client.close()


def _state(r: Any) -> State:
    try:
        status = Status(r.status)
    except ValueError:
        status = Status.UNKNOWN
    return State(
        id=r.id,
        exec_id=r.exec_id,
        pid=r.pid,
        status=status,
        stdin=r.stdin,
        stdout=r.stdout,
        stderr=r.stderr,
        terminal=r.terminal,
        exit_status=r.exit_status,
        exited_at=_timestamp(r, "exited_at"),
        bundle=r.bundle,
    )


@dataclass
class ShimTask:
    """``core.runtime.Task`` over a shim connection."""

    id: str
    namespace: str
    runtime: str
    bundle: Bundle
    binary: ShimBinary
    bootstrap: BootstrapResult
    conn: ShimConnection
    init_pid: int = 0
    # Set once the shim answered Delete: the task is gone, its shim's closing is expected.
    deleted: bool = False
    # Completed when the on-close clean-up of this connection has finished.
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    extra: dict[str, object] = field(default_factory=dict)

    # -- core.runtime.Task --------------------------------------------------------------------

    async def pid(self) -> int:
        resp = await self.conn.call("Connect", self.conn.request("Connect", id=self.id), downgrade=True)
        self.init_pid = resp.task_pid
        return int(resp.task_pid)

    async def connect(self) -> tuple[int, int]:
        """(shim pid, task pid): the liveness check after a reconnect."""
        resp = await self.conn.call("Connect", self.conn.request("Connect", id=self.id), downgrade=True)
        self.init_pid = resp.task_pid
        return int(resp.shim_pid), int(resp.task_pid)

    async def create(self, opts: CreateOpts) -> int:
        req = self.conn.request(
            "Create",
            id=self.id,
            bundle=str(self.bundle.path),
            terminal=opts.io.terminal,
            stdin=opts.io.stdin,
            stdout=opts.io.stdout,
            stderr=opts.io.stderr,
            checkpoint=opts.checkpoint,
        )
        for m in opts.rootfs:
            req.rootfs.add(type=m.type, source=m.source, target=m.target, options=list(m.options))
        _any(req, "options", opts.task_options or opts.runtime_options)
        resp = await self.conn.call("Create", req, downgrade=True)
        self.init_pid = resp.pid
        return int(resp.pid)

    async def state(self) -> State:
        return await self._state("")

    async def _state(self, exec_id: str) -> State:
        try:
            resp = await self.conn.call("State", self.conn.request("State", id=self.id, exec_id=exec_id))
        except ShimGoneError:
            raise NotFoundError(f"task {self.id!r}: shim connection closed") from None
        return _state(resp)

    async def start(self) -> int:
        return await self._start("")

    async def _start(self, exec_id: str) -> int:
        resp = await self.conn.call("Start", self.conn.request("Start", id=self.id, exec_id=exec_id))
        if not exec_id:
            self.init_pid = resp.pid
        return int(resp.pid)

    async def kill(self, signal: int, all: bool = False) -> None:
        await self._kill("", signal, all)

    async def _kill(self, exec_id: str, signal: int, all: bool) -> None:
        await self.conn.call(
            "Kill", self.conn.request("Kill", id=self.id, exec_id=exec_id, signal=signal, all=all)
        )

    async def resize_pty(self, width: int, height: int) -> None:
        await self._resize("", width, height)

    async def _resize(self, exec_id: str, width: int, height: int) -> None:
        await self.conn.call(
            "ResizePty",
            self.conn.request("ResizePty", id=self.id, exec_id=exec_id, width=width, height=height),
        )

    async def close_io(self) -> None:
        await self._close_io("")

    async def _close_io(self, exec_id: str) -> None:
        await self.conn.call("CloseIO", self.conn.request("CloseIO", id=self.id, exec_id=exec_id, stdin=True))

    async def wait(self) -> Exit:
        if not self.init_pid:
            await self.pid()
        resp = await self.conn.call("Wait", self.conn.request("Wait", id=self.id))
        return Exit(self.init_pid, resp.exit_status, _timestamp(resp, "exited_at"))

    async def _wait(self, exec_id: str) -> Exit:
        resp = await self.conn.call("Wait", self.conn.request("Wait", id=self.id, exec_id=exec_id))
        return Exit(0, resp.exit_status, _timestamp(resp, "exited_at"))

    async def pause(self) -> None:
        await self.conn.call("Pause", self.conn.request("Pause", id=self.id))

    async def resume(self) -> None:
        await self.conn.call("Resume", self.conn.request("Resume", id=self.id))

    async def exec(self, id: str, opts: ExecOpts) -> ShimExec:
        identifiers.validate(id)
        req = self.conn.request(
            "Exec",
            id=self.id,
            exec_id=id,
            terminal=opts.io.terminal,
            stdin=opts.io.stdin,
            stdout=opts.io.stdout,
            stderr=opts.io.stderr,
        )
        _any(req, "spec", opts.spec)
        await self.conn.call("Exec", req)
        return ShimExec(self, id)

    async def process(self, id: str) -> ShimExec:
        p = ShimExec(self, id)
        await p.state()
        return p

    async def pids(self) -> list[ProcessInfo]:
        resp = await self.conn.call("Pids", self.conn.request("Pids", id=self.id))
        return [ProcessInfo(p.pid, p.info if p.HasField("info") else None) for p in resp.processes]

    async def checkpoint(self, path: str, options: AnyValue | None = None) -> None:
        req = self.conn.request("Checkpoint", id=self.id, path=path)
        _any(req, "options", options)
        await self.conn.call("Checkpoint", req)

    async def update(self, resources: AnyValue | None, annotations: Mapping[str, str] | None = None) -> None:
        req = self.conn.request("Update", id=self.id, annotations=dict(annotations or {}))
        _any(req, "resources", resources)
        await self.conn.call("Update", req)

    async def stats(self) -> AnyValue:
        resp = await self.conn.call("Stats", self.conn.request("Stats", id=self.id))
        stats: AnyValue = resp.stats
        return stats

    # -- used by the manager ------------------------------------------------------------------

    async def delete_task(self) -> Exit:
        resp = await self.conn.call("Delete", self.conn.request("Delete", id=self.id))
        return Exit(resp.pid, resp.exit_status, _timestamp(resp, "exited_at"))

    async def shutdown(self) -> None:
        """Ask the shim to exit (it does only when it has no task left); a closed connection
        is success."""
        try:
            await self.conn.call("Shutdown", self.conn.request("Shutdown", id=self.id), downgrade=False)
        except ShimGoneError:
            pass

    @property
    def address(self) -> str:
        return self.bootstrap.address

    @property
    def path(self) -> Path:
        return self.bundle.path


@dataclass
class ShimExec:
    """``core.runtime.ExecProcess``: exec process ``id`` of a shim task."""

    task: ShimTask
    id: str

    async def state(self) -> State:
        return await self.task._state(self.id)

    async def start(self) -> int:
        return await self.task._start(self.id)

    async def kill(self, signal: int, all: bool = False) -> None:
        await self.task._kill(self.id, signal, all)

    async def resize_pty(self, width: int, height: int) -> None:
        await self.task._resize(self.id, width, height)

    async def close_io(self) -> None:
        await self.task._close_io(self.id)

    async def wait(self) -> Exit:
        return await self.task._wait(self.id)

    async def delete(self) -> Exit:
        conn = self.task.conn
        resp = await conn.call("Delete", conn.request("Delete", id=self.task.id, exec_id=self.id))
        return Exit(resp.pid, resp.exit_status, _timestamp(resp, "exited_at"))
