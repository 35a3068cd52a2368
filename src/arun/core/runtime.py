"""Tasks: the running side of a container (containerd's ``core/runtime``).

A *task* is a container's init process as a shim runs it; an *exec process*
is another process started in it. ``TaskRuntime`` is what the runtime v2
manager (``arun.runtime``) implements, and what the tasks service and the CRI
plugin call, in the namespace of the current context (``arun.namespaces``).

Opaque payloads (the OCI process of an exec, runtime options, resources,
statistics, process details) travel as anything with ``type_url`` and
``value`` (``google.protobuf.Any`` and ``arun.core.typeurl.Any`` both fit);
rootfs mounts as anything with ``type``/``source``/``target``/``options``
(``arun.core.mount.Mount`` and ``containerd.types.Mount`` both fit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Protocol

# Event topics (containerd core/runtime/events.go).
TASK_CREATE = "/tasks/create"
TASK_START = "/tasks/start"
TASK_OOM = "/tasks/oom"
TASK_EXIT = "/tasks/exit"
TASK_DELETE = "/tasks/delete"
TASK_EXEC_ADDED = "/tasks/exec-added"
TASK_EXEC_STARTED = "/tasks/exec-started"
TASK_PAUSED = "/tasks/paused"
TASK_RESUMED = "/tasks/resumed"
TASK_CHECKPOINTED = "/tasks/checkpointed"

# Runtime names of the shims arun knows by name.
RUNTIME_ARUN = "io.containerd.arun.v1"
RUNTIME_RUNC = "io.containerd.runc.v2"

# The type URL of an exec's OCI process (``ExecOpts.spec``) and of a task's spec.
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

# Exit status reported for a task whose shim died without telling (containerd's value).
UNKNOWN_EXIT_STATUS = 255


class Status(IntEnum):
    """A process's status; the numbers of ``containerd.v1.types.Status``."""

    UNKNOWN = 0
    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    PAUSED = 4
    PAUSING = 5


class AnyValue(Protocol):
    """A serialized value tagged with its type URL."""

    @property
    def type_url(self) -> str: ...

    @property
    def value(self) -> bytes: ...


class MountSpec(Protocol):
    """One rootfs mount."""

    @property
    def type(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def options(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class IO:
    """Where a process's stdio goes: paths (FIFOs made by the client) or URIs
    (``file://``, ``binary://``), passed to the shim as they are."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass
class CreateOpts:
    """What a new task needs."""

    # The OCI runtime spec as JSON (written to the bundle as config.json).
    spec: bytes
    rootfs: Sequence[MountSpec] = ()
    io: IO = field(default_factory=IO)
    # A runtime name (``io.containerd.runc.v2``) or the absolute path of a shim binary.
    runtime: str = RUNTIME_RUNC
    # Options of the runtime (``containerd.runc.v1.Options``) from the container record, and
    # per-task options from the request; the task's win.
    runtime_options: AnyValue | None = None
    task_options: AnyValue | None = None
    # A checkpoint directory to restore from (unsupported by arun's shim).
    checkpoint: str = ""


@dataclass(frozen=True)
class ExecOpts:
    """An exec process: its OCI process (``PROCESS_TYPE_URL``, JSON) and stdio."""

    spec: AnyValue
    io: IO = field(default_factory=IO)


@dataclass(frozen=True)
class Exit:
    pid: int
    status: int
    timestamp: datetime | None


@dataclass(frozen=True)
class State:
    id: str
    exec_id: str
    pid: int
    status: Status
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    exit_status: int = 0
    exited_at: datetime | None = None
    bundle: str = ""


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    # Runtime-specific details (``containerd.runc.v1.ProcessDetails`` carries the exec id).
    info: AnyValue | None = None


class Process(Protocol):
    """A task's init process or an exec process."""

    @property
    def id(self) -> str:
        """The task id, for the init process; the exec id, for an exec."""
        ...

    async def state(self) -> State: ...

    async def start(self) -> int:
        """Start the process; its pid."""
        ...

    async def kill(self, signal: int, all: bool = False) -> None: ...

    async def resize_pty(self, width: int, height: int) -> None: ...

    async def close_io(self) -> None:
        """Close the process's stdin."""
        ...

    async def wait(self) -> Exit:
        """Block until the process has exited."""
        ...


class ExecProcess(Process, Protocol):
    async def delete(self) -> Exit: ...


class Task(Process, Protocol):
    @property
    def namespace(self) -> str: ...

    @property
    def runtime(self) -> str:
        """The runtime name (or shim path) the task was created with."""
        ...

    async def pid(self) -> int: ...

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def exec(self, id: str, opts: ExecOpts) -> ExecProcess:
        """Add (not start) exec process ``id``."""
        ...

    async def process(self, id: str) -> ExecProcess:
        """The exec process ``id``; NotFoundError if the task has none by that id."""
        ...

    async def pids(self) -> list[ProcessInfo]: ...

    async def checkpoint(self, path: str, options: AnyValue | None = None) -> None: ...

    async def update(
        self, resources: AnyValue | None, annotations: Mapping[str, str] | None = None
    ) -> None: ...

    async def stats(self) -> AnyValue:
        """The task's cgroup metrics (``io.containerd.cgroups.v1.Metrics`` or ``…v2.Metrics``)."""
        ...


class TaskRuntime(Protocol):
    """Tasks of the current namespace (containerd's ``PlatformRuntime``)."""

    async def create(self, id: str, opts: CreateOpts) -> Task:
        """Start (or join) a shim and create the task in it; AlreadyExistsError if the
        namespace has a task ``id``. Nothing is left behind on failure."""
        ...

    async def get(self, id: str) -> Task:
        """NotFoundError if there is no such task."""
        ...

    async def tasks(self, all: bool = False) -> list[Task]:
        """The tasks of the current namespace, or of every namespace with ``all``."""
        ...

    async def delete(self, id: str) -> Exit:
        """Delete a stopped (or never started) task, its bundle and, when it was the
        shim's last task, the shim; the init process's exit."""
        ...
