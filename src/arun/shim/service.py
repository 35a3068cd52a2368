"""The Task service of the shim: several containers of one pod, driven through runc.

:class:`Shim` holds the containers and does the work; :class:`TaskAPI` is the thin ttrpc face,
one instance per API version (``containerd.task.v2.Task`` and ``containerd.task.v3.Task`` have
the same messages under two package names), converting requests and building responses of its
own version.

Exits and events. Every exit comes from the reaper through :meth:`Shim._on_exit`. A process is
*running* for exit purposes only once its start event is queued; an exit that arrives before
that (``runc start`` returned, the process died at once) is buffered by the ``_pre_start``
subscription and handled right after the start event, so TaskExit can never precede TaskStart
(containerd's ``preStart``). A container's init exit is published last: when the init dies, the
container's other processes are killed (if it shares a pid namespace) and the init's TaskExit
waits until every running exec has reported its own exit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from arun import errdefs, identifiers
from arun.shim import cgroups as cg
from arun.shim import litepb
from arun.shim.events import EventQueue
from arun.shim.mount import Mount, Mounter, mount_all
from arun.shim.process.exec import ExecProcess
from arun.shim.process.init import Init
from arun.shim.process.io import Stdio
from arun.shim.process.states import Status
from arun.shim.reaper import Exit, Reaper
from arun.shim.runc import Runc, RuncCli
from arun.shim.util import DEFAULT_RUNC_ROOT, which
from arun.ttrpc.lite import full_name
from arun.ttrpc.service import ServiceTable

log = logging.getLogger(__name__)

OPTIONS_FILE = "options.json"
# Go's zero time.Time as a protobuf Timestamp: what a runc shim reports for "not exited".
_ZERO_TIME_SECONDS = -62135596800

# The task messages are the lite codec's (arun.shim.litepb): no protobuf in the shim's image.
events_pb2 = SimpleNamespace(**litepb.PACKAGES["containerd.events"])
_Empty = litepb.google_protobuf_Empty

# containerd.v1.types.Status (containerd/api/types/task/task.proto)
UNKNOWN, CREATED, RUNNING, STOPPED, PAUSED, PAUSING = range(6)
_STATUS = {
    Status.CREATED: CREATED,
    Status.RUNNING: RUNNING,
    Status.STOPPED: STOPPED,
    Status.PAUSED: PAUSED,
    Status.PAUSING: PAUSING,
}

Process = Init | ExecProcess


# -- runtime options ------------------------------------------------------------------------------


@dataclass
class RuntimeOptions:
    """What ``containerd.runc.v1.Options`` (or 1.x ``containerd.linux.runc.*Options``) says."""

    binary_name: str = ""
    root: str = ""
    systemd_cgroup: bool = False
    no_pivot_root: bool = False
    no_new_keyring: bool = False
    io_uid: int = 0
    io_gid: int = 0
    criu_path: str = ""
    criu_work_path: str = ""
    shim_cgroup: str = ""

    @classmethod
    def from_any(cls, any_: Any) -> RuntimeOptions:
        """Decode the Any of CreateTaskRequest.options (or a bootstrap extension)."""
        if any_ is None or not any_.type_url:
            return cls()
        name = any_.type_url.rsplit("/", 1)[-1]
        if name == "containerd.runc.v1.Options":
            o = litepb.containerd_runc_v1_Options.FromString(any_.value)
            return cls(
                binary_name=o.binary_name,
                root=o.root,
                systemd_cgroup=o.systemd_cgroup,
                no_pivot_root=o.no_pivot_root,
                no_new_keyring=o.no_new_keyring,
                io_uid=o.io_uid,
                io_gid=o.io_gid,
                criu_path=o.criu_path,
                criu_work_path=o.criu_work_path,
                shim_cgroup=o.shim_cgroup,
            )
        if name == "containerd.linux.runc.CreateOptions":
            c = litepb.containerd_linux_runc_CreateOptions.FromString(any_.value)
            return cls(
                no_pivot_root=c.no_pivot_root,
                no_new_keyring=c.no_new_keyring,
                io_uid=c.io_uid,
                io_gid=c.io_gid,
                criu_work_path=c.criu_work_path,
                shim_cgroup=c.shim_cgroup,
            )
        if name == "containerd.linux.runc.RuncOptions":
            r = litepb.containerd_linux_runc_RuncOptions.FromString(any_.value)
            return cls(binary_name=r.runtime, root=r.runtime_root, systemd_cgroup=r.systemd_cgroup)
        raise errdefs.InvalidArgumentError(f"unsupported runtime options type {any_.type_url!r}")

    def merged_over(self, base: RuntimeOptions) -> RuntimeOptions:
        """These options, with ``base`` filling what they leave empty (binary and root)."""
        out = RuntimeOptions(**self.__dict__)
        out.binary_name = self.binary_name or base.binary_name
        out.root = self.root or base.root
        out.systemd_cgroup = self.systemd_cgroup or base.systemd_cgroup
        return out


def write_options(bundle: str, opts: RuntimeOptions) -> None:
    """Record binary and root in the bundle for the ``delete`` command."""
    data = {
        "binary_name": opts.binary_name or "runc",
        "root": opts.root or DEFAULT_RUNC_ROOT,
        "systemd_cgroup": opts.systemd_cgroup,
    }
    tmp = os.path.join(bundle, f".{OPTIONS_FILE}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, os.path.join(bundle, OPTIONS_FILE))


def read_options(bundle: str) -> RuntimeOptions:
    try:
        with open(os.path.join(bundle, OPTIONS_FILE)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return RuntimeOptions()
    return RuntimeOptions(
        binary_name=str(data.get("binary_name", "")),
        root=str(data.get("root", "")),
        systemd_cgroup=bool(data.get("systemd_cgroup", False)),
    )


def runc_root(opts: RuntimeOptions, namespace: str) -> str:
    return os.path.join(opts.root or DEFAULT_RUNC_ROOT, namespace)


def shares_pid_namespace(bundle: str) -> bool:
    """True if the container has no pid namespace of its own (then its processes must be
    killed when its init exits: nothing else would)."""
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return True
    for ns in (spec.get("linux") or {}).get("namespaces") or []:
        if ns.get("type") == "pid" and not ns.get("path"):
            return False
    return True


# -- containers -----------------------------------------------------------------------------------


@dataclass(eq=False)
class Container:
    id: str
    bundle: str
    init: Init
    execs: dict[str, ExecProcess] = field(default_factory=dict)
    cgroup: cg.Cgroup | None = None
    kill_all_on_exit: bool = False
    #: The init's exit once reaped: no exec may start after it.
    init_exit: Exit | None = None
    running_execs: int = 0
    execs_changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Exec ids being set up (Exec in progress).
    reserved: set[str] = field(default_factory=set)

    def process(self, exec_id: str) -> Process:
        if not exec_id:
            return self.init
        p = self.execs.get(exec_id)
        if p is None:
            raise errdefs.NotFoundError(f"exec {exec_id!r} of container {self.id!r} does not exist")
        return p

    def exec_changed(self, delta: int) -> None:
        self.running_execs += delta
        self.execs_changed.set()


RuncFactory = Callable[[RuntimeOptions, str, str], Runc]
"""(options, namespace, bundle) → the runtime to drive that container with."""


def _check_bundle(bundle: str) -> None:
    if not os.path.isabs(bundle) or not os.path.isfile(os.path.join(bundle, "config.json")):
        raise errdefs.InvalidArgumentError(f"bundle {bundle!r} is not a directory with a config.json")


def _ts(target: Any, ns: int) -> None:
    if ns:
        target.seconds, target.nanos = divmod(ns, 1_000_000_000)
    else:
        target.seconds, target.nanos = _ZERO_TIME_SECONDS, 0


class Shim:
    """The containers of this shim and everything done to them."""

    def __init__(
        self,
        *,
        namespace: str,
        reaper: Reaper,
        events: EventQueue,
        mounter: Mounter,
        runc_factory: RuncFactory | None = None,
        defaults: RuntimeOptions | None = None,
        cgroup_loader: Callable[[int], cg.Cgroup | None] = cg.load,
        watch_oom: bool = False,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.namespace = namespace
        self.reaper = reaper
        self.events = events
        self.mounter = mounter
        self.defaults = defaults or RuntimeOptions()
        self._runc_factory = runc_factory or self._real_runc
        self._cgroup_loader = cgroup_loader
        self.oom = cg.OOMWatcher(self._oom) if watch_oom else None
        self._on_shutdown = on_shutdown
        self.containers: dict[str, Container] = {}
        self._creating: set[str] = set()
        self._running: dict[int, list[tuple[Container, Process]]] = {}
        self._pre_start: list[dict[int, list[Exit]]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._subscription = reaper.subscribe(self._on_exit)
        self.shutdown_requested = False

    def _real_runc(self, opts: RuntimeOptions, namespace: str, bundle: str) -> Runc:
        return RuncCli(
            reaper=self.reaper,
            root=runc_root(opts, namespace),
            log=os.path.join(bundle, "log.json"),
            binary=opts.binary_name or "runc",
            systemd_cgroup=opts.systemd_cgroup,
        )

    def close(self) -> None:
        self._subscription.close()
        if self.oom is not None:
            self.oom.close()

    def get(self, id: str) -> Container:
        c = self.containers.get(id)
        if c is None:
            raise errdefs.NotFoundError(f"container {id!r} not created")
        return c

    # -- exits --------------------------------------------------------------------------------

    @contextmanager
    def _pre_started(self, c: Container | None = None) -> Iterator[Callable[[Container, Process], None]]:
        """Buffer exits while a process is being created/started; yields ``handle_started``,
        to be called once the process's start event is queued (containerd ``preStart``)."""
        exits: dict[int, list[Exit]] = {}
        self._pre_start.append(exits)
        if c is not None and c.init.pid:
            # The init is being started: take it out of the running set so an exit now is
            # treated as an early exit, handled after TaskStart.
            entries = [cp for cp in self._running.get(c.init.pid, []) if cp[0] is not c]
            if entries:
                self._running[c.init.pid] = entries
            else:
                self._running.pop(c.init.pid, None)
        done = False

        def handle_started(container: Container, p: Process) -> None:
            nonlocal done
            done = True
            self._unsubscribe_pre_start(exits)
            early = exits.get(p.pid, []) if p.pid else []
            if p.pid == 0 or early:
                for e in early:
                    if p is container.init:
                        container.init_exit = e
                    self._process_exited(e, container, p)
            else:
                self._running.setdefault(p.pid, []).append((container, p))

        try:
            yield handle_started
        finally:
            if not done:
                self._unsubscribe_pre_start(exits)

    def _unsubscribe_pre_start(self, exits: dict[int, list[Exit]]) -> None:
        for i, candidate in enumerate(self._pre_start):
            if candidate is exits:
                del self._pre_start[i]
                return

    def _on_exit(self, e: Exit) -> None:
        """Reaper callback: runs on the loop for every reaped child."""
        for exits in self._pre_start:
            exits.setdefault(e.pid, []).append(e)
        for c, p in self._running.pop(e.pid, []):
            if p is c.init:
                c.init_exit = e
                self._spawn(self._init_exited(e, c))
            else:
                self._process_exited(e, c, p)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _init_exited(self, e: Exit, c: Container) -> None:
        """Kill what the init leaves behind, wait for the execs' exits, then report the init's."""
        if c.kill_all_on_exit:
            try:
                await c.init.kill_all()
            except errdefs.ArunError as exc:
                log.warning("kill remaining processes of %s: %s", c.id, exc)
        while c.running_execs > 0:
            c.execs_changed.clear()
            await c.execs_changed.wait()
        self._process_exited(e, c, c.init)

    def _process_exited(self, e: Exit, c: Container, p: Process) -> None:
        p.set_exited(e.status, e.timestamp_ns)
        is_init = p is c.init
        if is_init and self.oom is not None and c.cgroup is not None and c.cgroup.version == 2:
            self.oom.remove(c.id)
        ev = events_pb2.TaskExit(container_id=c.id, id=p.id, pid=e.pid, exit_status=e.status)
        _ts(ev.exited_at, e.timestamp_ns)
        self.events.send(ev)
        if not is_init:
            c.exec_changed(-1)

    def _oom(self, container_id: str) -> None:
        self.events.send(events_pb2.TaskOOM(container_id=container_id))

    # -- operations ---------------------------------------------------------------------------

    async def create(self, r: Any) -> int:
        identifiers.validate(r.id)
        if r.id in self.containers or r.id in self._creating:
            raise errdefs.AlreadyExistsError(f"container {r.id!r} already exists in this shim")
        _check_bundle(r.bundle)
        if r.checkpoint:
            raise errdefs.UnimplementedError(
                "restoring from a checkpoint is not supported by the arun shim (no criu support)"
            )
        given = RuntimeOptions.from_any(r.options if r.HasField("options") else None)
        opts = given.merged_over(self.defaults)
        mounts = [Mount(m.type, m.source, tuple(m.options), getattr(m, "target", "")) for m in r.rootfs]
        self._creating.add(r.id)
        try:
            with self._pre_started() as handle_started:
                c = await self._new_container(r, opts, mounts)
                self.containers[r.id] = c
                ev = events_pb2.TaskCreate(
                    container_id=r.id,
                    bundle=r.bundle,
                    rootfs=list(r.rootfs),
                    io=events_pb2.TaskIO(
                        stdin=r.stdin, stdout=r.stdout, stderr=r.stderr, terminal=r.terminal
                    ),
                    checkpoint=r.checkpoint,
                    pid=c.init.pid,
                )
                self.events.send(ev)
                # Right after the reply, not before it: this callback runs before the loop next
                # polls for input, so before any later request (Start, Stats) or exit is handled,
                # while the init still waits in its cgroup for ``runc start``.
                asyncio.get_running_loop().call_soon(self._watch, c)
                handle_started(c, c.init)
        finally:
            self._creating.discard(r.id)
        return c.init.pid

    async def _new_container(self, r: Any, opts: RuntimeOptions, mounts: list[Mount]) -> Container:
        write_options(r.bundle, opts)
        runc = self._runc_factory(opts, self.namespace, r.bundle)
        rootfs: str | None = None
        if mounts:
            rootfs = os.path.join(r.bundle, "rootfs")
            os.makedirs(rootfs, exist_ok=True)
            mount_all(self.mounter, mounts, rootfs)
        init = Init(
            r.id,
            r.bundle,
            runc,
            Stdio(r.stdin, r.stdout, r.stderr, r.terminal),
            mounter=self.mounter,
            rootfs=rootfs,
            no_pivot=opts.no_pivot_root,
            no_new_keyring=opts.no_new_keyring,
            io_uid=opts.io_uid,
            io_gid=opts.io_gid,
        )
        # ``runc create`` takes tens of milliseconds in which this process only waits: what does
        # not need its result and cannot fail is done meanwhile (once runc has been spawned, at
        # the task's first suspension) — the pid namespace check, and the events connection to
        # the daemon (the TaskCreate event follows right after).
        creating = asyncio.ensure_future(init.create())
        try:
            await asyncio.sleep(0)
            kill_all = shares_pid_namespace(r.bundle)
            if not creating.done():
                self.events.dial_early()
            await creating
        except BaseException:
            if not creating.done():
                creating.cancel()
            await asyncio.gather(creating, return_exceptions=True)
            if rootfs is not None:
                try:
                    self.mounter.unmount_all(rootfs)
                except Exception as exc:
                    log.warning("unmount rootfs of failed container %s: %s", r.id, exc)
            raise
        return Container(r.id, r.bundle, init, kill_all_on_exit=kill_all)

    def _watch(self, c: Container) -> None:
        """Find the cgroup now (the init is paused in it) and watch it for OOM kills."""
        try:
            c.cgroup = self._cgroup_loader(c.init.pid)
        except OSError as exc:
            log.warning("cgroup of %s: %s", c.id, exc)
        if c.cgroup is not None and self.oom is not None:
            try:
                self.oom.add(c.id, c.cgroup)
            except OSError as exc:
                log.warning("cannot watch %s for OOM: %s", c.id, exc)

    async def start(self, id: str, exec_id: str) -> int:
        c = self.get(id)
        p = c.process(exec_id)
        if exec_id:
            if c.init_exit is not None:
                raise errdefs.FailedPreconditionError(f"container {id!r} init process is not running")
            c.exec_changed(+1)
        with self._pre_started(None if exec_id else c) as handle_started:
            try:
                await p.start()
            except BaseException:
                if exec_id:
                    c.exec_changed(-1)  # it never ran: no exit will come for it
                else:
                    handle_started(c, p)  # runc init may still be there: keep tracking it
                raise
            if exec_id:
                self.events.send(events_pb2.TaskExecStarted(container_id=id, exec_id=exec_id, pid=p.pid))
            else:
                self.events.send(events_pb2.TaskStart(container_id=id, pid=p.pid))
            handle_started(c, p)
        return p.pid

    async def delete(self, id: str, exec_id: str) -> Process:
        c = self.get(id)
        p = c.process(exec_id)
        if exec_id:
            await p.delete()
            c.execs.pop(exec_id, None)
            return p
        await p.delete()
        self.containers.pop(id, None)
        if self.oom is not None:
            self.oom.remove(id)
        ev = events_pb2.TaskDelete(container_id=id, pid=p.pid, exit_status=p.exit_status, id=id)
        _ts(ev.exited_at, p.exited_at_ns)
        self.events.send(ev)
        return p

    async def exec(self, r: Any) -> None:
        c = self.get(r.id)
        identifiers.validate(r.exec_id)
        if r.exec_id in c.execs or r.exec_id in c.reserved:
            raise errdefs.AlreadyExistsError(f"exec {r.exec_id!r} already exists in container {r.id!r}")
        c.init.exec_allowed()
        if c.init_exit is not None:
            raise errdefs.FailedPreconditionError(f"container {r.id!r} init process is not running")
        try:
            spec = json.loads(r.spec.value) if r.spec.value else None
        except ValueError as exc:
            raise errdefs.InvalidArgumentError(
                f"exec {r.exec_id!r}: process spec is not JSON: {exc}"
            ) from exc
        if not isinstance(spec, dict) or not spec.get("args"):
            raise errdefs.InvalidArgumentError(f"exec {r.exec_id!r}: process spec has no args")
        p = ExecProcess(r.exec_id, c.init, spec, Stdio(r.stdin, r.stdout, r.stderr, r.terminal))
        c.execs[r.exec_id] = p
        self.events.send(events_pb2.TaskExecAdded(container_id=r.id, exec_id=r.exec_id))

    async def kill(self, id: str, exec_id: str, signal: int, all: bool) -> None:
        p = self.get(id).process(exec_id)
        await p.kill(signal, all)

    async def pause(self, id: str) -> None:
        await self.get(id).init.pause()
        self.events.send(events_pb2.TaskPaused(container_id=id))

    async def resume(self, id: str) -> None:
        await self.get(id).init.resume()
        self.events.send(events_pb2.TaskResumed(container_id=id))

    async def pids(self, id: str) -> list[tuple[int, str]]:
        """(pid, exec id or "") of every process in the container."""
        c = self.get(id)
        pids = await c.init.runc.ps(id)
        by_pid = {p.pid: p.id for p in c.execs.values() if p.pid}
        return [(pid, by_pid.get(pid, "")) for pid in pids]

    async def update(self, id: str, resources: Any) -> None:
        c = self.get(id)
        try:
            value = json.loads(resources.value) if resources.value else {}
        except ValueError as exc:
            raise errdefs.InvalidArgumentError(f"update {id!r}: resources are not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise errdefs.InvalidArgumentError(f"update {id!r}: resources must be a JSON object")
        await c.init.update(value)

    async def checkpoint(self, id: str, path: str, options: Any) -> None:
        c = self.get(id)
        if which("criu") is None:
            raise errdefs.UnimplementedError("checkpoint needs criu, which is not installed on this host")
        exit_after = False
        work = ""
        if options is not None and options.type_url.endswith("CheckpointOptions"):
            o = litepb.containerd_runc_v1_CheckpointOptions.FromString(options.value)
            exit_after, work, path = o.exit, o.work_path, o.image_path or path
        if not path:
            raise errdefs.InvalidArgumentError(f"checkpoint {id!r}: no image path")
        await c.init.checkpoint(path, work or os.path.join(c.bundle, "criu-work"), exit_after)
        self.events.send(events_pb2.TaskCheckpointed(container_id=id, checkpoint=path))

    def resize(self, id: str, exec_id: str, width: int, height: int) -> None:
        self.get(id).process(exec_id).resize(width, height)

    def close_io(self, id: str, exec_id: str, stdin: bool) -> None:
        p = self.get(id).process(exec_id)
        if stdin:
            p.close_io()

    async def wait(self, id: str, exec_id: str) -> Process:
        p = self.get(id).process(exec_id)
        await p.wait()
        return p

    def stats(self, id: str) -> Any:
        c = self.get(id)
        if c.cgroup is None:
            raise errdefs.NotFoundError(f"cgroup of container {id!r} does not exist")
        return c.cgroup.stats()

    def shutdown(self) -> bool:
        """Shut down if no container is left; True if it will."""
        if self.containers or self._creating:
            return False
        self.shutdown_requested = True
        if self._on_shutdown is not None:
            self._on_shutdown()
        return True


# -- the ttrpc face -------------------------------------------------------------------------------


def task_service(name: str) -> tuple[SimpleNamespace, ServiceTable]:
    """The messages of task service ``name``'s package (``containerd.task.v2.Task`` or
    ``containerd.task.v3.Task``) by their short names, and its method table."""
    messages = SimpleNamespace(**litepb.PACKAGES[name.rsplit(".", 1)[0]])
    return messages, ServiceTable(name, litepb.SERVICES[name])


class TaskAPI:
    """``containerd.task.v{2,3}.Task`` handlers over a :class:`Shim`; ``service_name`` says which
    (``containerd.task.v2.Task`` or ``containerd.task.v3.Task``)."""

    def __init__(self, shim: Shim | None, service_name: str) -> None:
        # None: registered on a server before the shim exists (a zygote's spare prepares its
        # server while it waits for a task); :meth:`bind` sets it once the task is known.
        self._shim = shim
        self.service_name = service_name
        # The messages, and the methods with their message classes (for ``Server.register``).
        self.pb, self.table = task_service(service_name)
        self._empty = _Empty

    def bind(self, shim: Shim) -> None:
        self._shim = shim

    @property
    def shim(self) -> Shim:
        if self._shim is None:
            raise errdefs.UnavailableError("the shim does not serve a task yet")
        return self._shim

    def _state(self, c: Container, p: Process, exec_id: str) -> Any:
        sio = p.stdio
        resp = self.pb.StateResponse(
            id=p.id,
            bundle=c.bundle,
            pid=p.pid,
            status=_STATUS.get(p.status(), UNKNOWN),
            stdin=sio.stdin,
            stdout=sio.stdout,
            stderr=sio.stderr,
            terminal=sio.terminal,
            exit_status=p.exit_status,
            exec_id=exec_id,
        )
        _ts(resp.exited_at, p.exited_at_ns)
        return resp

    async def State(self, r: Any) -> Any:
        c = self.shim.get(r.id)
        return self._state(c, c.process(r.exec_id), r.exec_id)

    async def Create(self, r: Any) -> Any:
        return self.pb.CreateTaskResponse(pid=await self.shim.create(r))

    async def Start(self, r: Any) -> Any:
        return self.pb.StartResponse(pid=await self.shim.start(r.id, r.exec_id))

    async def Delete(self, r: Any) -> Any:
        p = await self.shim.delete(r.id, r.exec_id)
        resp = self.pb.DeleteResponse(pid=p.pid, exit_status=p.exit_status)
        _ts(resp.exited_at, p.exited_at_ns)
        return resp

    async def Pids(self, r: Any) -> Any:
        resp = self.pb.PidsResponse()
        for pid, exec_id in await self.shim.pids(r.id):
            info = resp.processes.add(pid=pid)
            if exec_id:
                info.info.type_url = "containerd.runc.v1.ProcessDetails"
                details = litepb.containerd_runc_v1_ProcessDetails(exec_id=exec_id)
                info.info.value = details.SerializeToString()
        return resp

    async def Pause(self, r: Any) -> Any:
        await self.shim.pause(r.id)
        return self._empty()

    async def Resume(self, r: Any) -> Any:
        await self.shim.resume(r.id)
        return self._empty()

    async def Checkpoint(self, r: Any) -> Any:
        await self.shim.checkpoint(r.id, r.path, r.options if r.HasField("options") else None)
        return self._empty()

    async def Kill(self, r: Any) -> Any:
        await self.shim.kill(r.id, r.exec_id, r.signal, r.all)
        return self._empty()

    async def Exec(self, r: Any) -> Any:
        await self.shim.exec(r)
        return self._empty()

    async def ResizePty(self, r: Any) -> Any:
        self.shim.resize(r.id, r.exec_id, r.width, r.height)
        return self._empty()

    async def CloseIO(self, r: Any) -> Any:
        self.shim.close_io(r.id, r.exec_id, r.stdin)
        return self._empty()

    async def Update(self, r: Any) -> Any:
        await self.shim.update(r.id, r.resources)
        return self._empty()

    async def Wait(self, r: Any) -> Any:
        p = await self.shim.wait(r.id, r.exec_id)
        resp = self.pb.WaitResponse(exit_status=p.exit_status)
        _ts(resp.exited_at, p.exited_at_ns)
        return resp

    async def Stats(self, r: Any) -> Any:
        metrics = self.shim.stats(r.id)
        resp = self.pb.StatsResponse()
        resp.stats.type_url = full_name(type(metrics))
        resp.stats.value = metrics.SerializeToString()
        return resp

    async def Connect(self, r: Any) -> Any:
        c = self.shim.containers.get(r.id)
        from arun import __version__

        return self.pb.ConnectResponse(
            shim_pid=os.getpid(), task_pid=c.init.pid if c is not None else 0, version=__version__
        )

    async def Shutdown(self, r: Any) -> Any:
        self.shim.shutdown()
        return self._empty()
