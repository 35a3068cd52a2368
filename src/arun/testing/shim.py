"""Fakes for the shim's privileged interfaces: a recording OCI runtime and a recording mounter."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from arun import errdefs
from arun.shim.mount import Mount
from arun.shim.runc import NULL_STDIO, StdioFds


@dataclass
class Call:
    name: str
    id: str
    args: dict[str, Any] = field(default_factory=dict)


class FakeRunc:
    """Implements ``arun.shim.runc.Runc`` by recording calls.

    ``create``/``exec`` write ``next_pid`` (then increment it) to the pid file they are given, as
    runc would. ``fail[name]`` makes that command raise the given error once.
    """

    def __init__(self, next_pid: int = 4000) -> None:
        self.calls: list[Call] = []
        self.next_pid = next_pid
        self.fail: dict[str, errdefs.ArunError] = {}
        self.pids: dict[str, list[int]] = {}
        self.states: dict[str, str] = {}
        #: name → callable run inside that command (e.g. to deliver an exit mid-call)
        self.hooks: dict[str, Callable[[], None]] = {}

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def _record(self, name: str, id: str, **args: Any) -> None:
        self.calls.append(Call(name, id, args))
        hook = self.hooks.pop(name, None)
        if hook is not None:
            hook()
        err = self.fail.pop(name, None)
        if err is not None:
            raise err

    def _write_pid(self, path: str) -> int:
        pid = self.next_pid
        self.next_pid += 1
        with open(path, "w") as f:
            f.write(str(pid))
        return pid

    async def create(
        self,
        id: str,
        bundle: str,
        *,
        pid_file: str,
        stdio: StdioFds = NULL_STDIO,
        console_socket: str | None = None,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
    ) -> None:
        self._record(
            "create",
            id,
            bundle=bundle,
            pid_file=pid_file,
            stdio=stdio,
            console_socket=console_socket,
            no_pivot=no_pivot,
        )
        pid = self._write_pid(pid_file)
        self.pids[id] = [pid]
        self.states[id] = "created"

    async def start(self, id: str) -> None:
        self._record("start", id)
        self.states[id] = "running"

    async def state(self, id: str) -> dict[str, Any]:
        self._record("state", id)
        if id not in self.states:
            raise errdefs.NotFoundError(f"container {id!r} does not exist")
        return {"id": id, "status": self.states[id], "pid": self.pids.get(id, [0])[0]}

    async def kill(self, id: str, signal: int, *, all: bool = False) -> None:
        self._record("kill", id, signal=signal, all=all)

    async def delete(self, id: str, *, force: bool = False) -> None:
        self._record("delete", id, force=force)
        self.states.pop(id, None)

    async def exec(
        self,
        id: str,
        process: Mapping[str, Any],
        *,
        pid_file: str,
        stdio: StdioFds = NULL_STDIO,
        console_socket: str | None = None,
    ) -> None:
        self._record("exec", id, process=dict(process), pid_file=pid_file, console_socket=console_socket)
        pid = self._write_pid(pid_file)
        self.pids.setdefault(id, []).append(pid)

    async def pause(self, id: str) -> None:
        self._record("pause", id)
        self.states[id] = "paused"

    async def resume(self, id: str) -> None:
        self._record("resume", id)
        self.states[id] = "running"

    async def update(self, id: str, resources: Mapping[str, Any]) -> None:
        self._record("update", id, resources=dict(resources))

    async def ps(self, id: str) -> list[int]:
        self._record("ps", id)
        return list(self.pids.get(id, []))

    async def stats(self, id: str) -> dict[str, Any]:
        self._record("stats", id)
        return {}

    async def checkpoint(
        self, id: str, *, image_path: str, work_path: str, leave_running: bool = True
    ) -> None:
        self._record("checkpoint", id, image_path=image_path, work_path=work_path)


class RecordingMounter:
    """Implements ``arun.shim.mount.Mounter``: records instead of mounting."""

    def __init__(self) -> None:
        self.mounted: list[tuple[Mount, str]] = []
        self.unmounted: list[str] = []
        self.fail_on: str | None = None

    def mount(self, m: Mount, target: str) -> None:
        if self.fail_on is not None and m.source == self.fail_on:
            raise errdefs.InvalidArgumentError(f"mount {m.source!r} refused by the test")
        if not os.path.isdir(target):
            raise errdefs.NotFoundError(f"mount target {target!r} does not exist")
        self.mounted.append((m, target))

    def unmount_all(self, target: str) -> None:
        self.unmounted.append(target)
        self.mounted = [(m, t) for m, t in self.mounted if not (t == target or t.startswith(target + "/"))]


class RecordingForwarder:
    """Implements ``arun.shim.events.Forwarder``: decodes and records what would be forwarded.

    ``failures`` makes the next N forwards raise ConnectionError.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.failures = 0
        self.attempts = 0
        self.closed = False

    async def forward(self, request: bytes, namespace: str) -> None:
        from google.protobuf import descriptor_pool, message_factory

        from arun.api.containerd.events import task_pb2  # noqa: F401  (registers the types)
        from arun.api.containerd.services.ttrpc.events.v1 import events_pb2

        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("daemon not listening (test)")
        req = events_pb2.ForwardRequest.FromString(request)
        desc = descriptor_pool.Default().FindMessageTypeByName(req.envelope.event.type_url)
        cls = message_factory.GetMessageClass(desc)
        self.events.append((req.envelope.topic, cls.FromString(req.envelope.event.value)))

    async def close(self) -> None:
        self.closed = True

    def topics(self) -> list[str]:
        return [t for t, _ in self.events]
