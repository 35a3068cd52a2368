"""The long-running shim: a ttrpc server for ``containerd.task.v2.Task`` and ``v3.Task``.

:func:`serve` is the whole life of a shim process once it has its listening socket. It is
called by ``python -m arun.shim`` (the ``start`` command launched it with the socket as fd 3),
and is meant to be called just as well in the child of a fork from a pre-imported template
process (the daemon's zygote)::

    from arun.shim import manager, server
    server.preload()                      # once, in the single-threaded template, no loop running
    ...
    address = manager.socket_address(grpc_address, ns, manager.group_key(bundle, id), socket_dir)
    listener = manager.listen(manager.socket_path(address))
    if listener is None: ...              # a live shim of this pod already serves: reuse address
    if os.fork() == 0:
        os._exit(server.serve(server.ServeParams(ns, id, bundle, grpc_address, ttrpc_address),
                              listener.fileno()))
    listener.close()

``serve`` makes the process a session leader in the bundle directory, closes every inherited fd
but stdio and the listener, points stderr at the bundle's ``log`` FIFO (JSON lines), resets the
signal dispositions a parent may have left, and runs a fresh event loop.

The process is a child subreaper with one reaper owning every wait, accepts only peers with its
own uid/gid (SO_PEERCRED, as the Go shims do), and exits on SIGTERM/SIGINT or after a
``Shutdown`` request when it has no container left, removing its socket.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("arun.shim")

SHUTDOWN_GRACE = 3.0
EVENTS_GRACE = 5.0


@dataclass
class ServeParams:
    namespace: str
    id: str
    bundle: str
    grpc_address: str = ""
    ttrpc_address: str = ""
    debug: bool = False
    runc_binary: str = ""
    runc_root: str = ""
    systemd_cgroup: bool = False
    #: stderr goes here (a FIFO opened by the daemon); None: ``<bundle>/log`` if it exists.
    log_path: str | None = None

    @classmethod
    def from_environment(
        cls, namespace: str, id: str, bundle: str, debug: bool, env: Mapping[str, str]
    ) -> ServeParams:
        from arun.shim import manager

        return cls(
            namespace=namespace,
            id=id,
            bundle=bundle,
            grpc_address=env.get("GRPC_ADDRESS", ""),
            ttrpc_address=env.get("TTRPC_ADDRESS", ""),
            debug=debug,
            runc_binary=env.get(manager.ENV_RUNC_BINARY, ""),
            runc_root=env.get(manager.ENV_RUNC_ROOT, ""),
            systemd_cgroup=env.get(manager.ENV_SYSTEMD_CGROUP, "") not in ("", "0", "false"),
        )


def trim_imports() -> None:
    """Keep modules the shim never uses out of the process: asyncio imports ``ssl`` (and with it
    libssl/libcrypto, ~4 MiB of RSS) only if it can; the shim speaks plain unix sockets.

    Call before asyncio is first imported; a no-op afterwards."""
    if "asyncio" not in sys.modules:
        sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]


def preload() -> None:
    """Import everything :func:`serve` needs, for a template process that forks shims (the
    zygote), and freeze the garbage collector's view of those objects so that the collector
    never writes to (and so un-shares) their pages in the children."""
    import gc

    trim_imports()
    import arun.shim.service
    import arun.ttrpc  # noqa: F401

    gc.collect()
    gc.freeze()


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        micros = int(record.created * 1_000_000) % 1_000_000
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{micros:06d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "logger": record.name,
            "pid": record.process,
        }
        for key in ("namespace", "id"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_process(params: ServeParams, listener_fd: int) -> None:
    """Session, cwd, file descriptors, stdio, signals and logging of a fresh shim process."""
    if os.getsid(0) != os.getpid():
        os.setsid()
    # Whatever a parent (the zygote) left open is not the shim's: keep only stdio and the socket.
    os.closerange(3, listener_fd)
    os.closerange(listener_fd + 1, 1 << 20)
    _reset_signals()
    # SIGTERM/SIGINT stay blocked until the event loop handles them (``_serve``): one that comes
    # while the shim is still starting then shuts it down cleanly instead of killing it.
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [_signal.SIGTERM, _signal.SIGINT])
    _setup_stdio(params)


def _reset_signals() -> None:
    # ``_signal``, not ``signal``: the wrapper converts every value through its enums, which in a
    # forked shim costs ~130 KiB of copied pages for these six calls.
    for sig in (_signal.SIGCHLD, _signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGUSR1):
        _signal.signal(sig, _signal.SIG_DFL)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)


def _setup_stdio(params: ServeParams) -> None:
    """cwd (the bundle), stdin/stdout on /dev/null, stderr on the bundle's log FIFO, and the
    JSON log handler on stderr."""
    os.chdir(params.bundle)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    log_fd = -1
    path = params.log_path or os.path.join(params.bundle, "log")
    with contextlib.suppress(OSError):
        # Non-blocking so a FIFO without a reader fails instead of hanging; blocking afterwards,
        # like the Go shim's log.
        log_fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(log_fd, True)
    os.dup2(log_fd if log_fd >= 0 else null, 2)
    for fd in (null, log_fd):
        if fd > 2:
            os.close(fd)
    logging.raiseExceptions = False
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(open(2, "w", closefd=False, buffering=1))
    handler.setFormatter(_JSONFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if params.debug else logging.INFO)


def serve(params: ServeParams, listener_fd: int) -> int:
    """Run the shim on the listening unix socket ``listener_fd``; returns the exit status.

    In a zygote child: ``os._exit(serve(params, fd))``. Every fd but 0-2 and ``listener_fd`` is
    closed first, stdio is re-pointed (log FIFO on 2), and a new event loop is run.
    """
    _setup_process(params, listener_fd)
    trim_imports()
    import asyncio

    try:
        asyncio.run(_serve(params, listener_fd))
    except Exception:
        log.exception("shim %s failed", params.id)
        return 1
    return 0


Activation = Callable[[], Awaitable["tuple[ServeParams, int] | None"]]
"""Waits for a spare's parameters: (what to serve, the listening socket's fd), or None to exit."""


def serve_prepared(activation: Activation) -> int:
    """Be a shim-in-waiting (a zygote's spare): run the event loop, the reaper and the ttrpc
    server now, and serve once ``activation`` returns the parameters and the listener.

    Everything that does not depend on the task (the loop, signal handling, the subreaper,
    the server's objects) is done before the task exists, so a start costs the daemon only
    what is specific to it. The caller has made this process a session leader and closed
    every descriptor it must not keep (it keeps the one ``activation`` reads from); stdio is
    re-pointed once the parameters (the bundle) are known. SIGTERM/SIGINT end a spare that
    was never activated with status 0.
    """
    _reset_signals()
    trim_imports()
    import asyncio

    try:
        asyncio.run(_serve_prepared(activation))
    except Exception:
        log.exception("shim failed")
        return 1
    return 0


async def _serve_prepared(activation: Activation) -> None:
    import asyncio

    ready = _prepare()
    waiting = asyncio.ensure_future(activation())
    stopped = asyncio.ensure_future(ready.stop.wait())
    try:
        await asyncio.wait((waiting, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        # ``stopped`` is not waited for: its cancellation completes on the loop's next turn,
        # while the task is being served (a wait here would delay the first request).
        stopped.cancel()
        if not waiting.done():
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
    # A replenishing spare waits under SCHED_IDLE: the zygote put it back under SCHED_OTHER before
    # handing it the task; this is in case it could not.
    idle_priority(False)
    got = None if waiting.cancelled() else waiting.result()  # an activation error propagates
    if got is None or ready.stop.is_set():
        if got is not None:
            os.close(got[1])
        ready.reaper.uninstall()
        return
    params, listener_fd = got
    _setup_stdio(params)
    await _run(params, listener_fd, ready)


REHEARSAL_CALLS = 12  # > CPython 3.11's warm-up delay (8) before it specializes a function


def idle_priority(on: bool, pid: int = 0) -> bool:
    """Put process ``pid`` (0: this one) under ``SCHED_IDLE`` — it runs only on a CPU nothing
    else wants — or back under ``SCHED_OTHER``; whether that worked."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE if on else os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError):
        return False
    return True


#: The stand-in for runc in the rehearsal's successful lifecycle: it answers the commands the shim
#: runs for a container (``create``/``start``/``state``/``ps``/``kill``/``delete``) as runc does —
#: pid file, JSON — and its "container" is a shell that waits on a FIFO (``go``) until ``start``
#: writes to it, then on one nobody writes to (``end``) until a signal ends it. Its state (FIFOs,
#: pid) lives in ``--root``, which must exist; only builtins but ``mkfifo`` and ``rm`` (fast).
_STAND_IN_RUNTIME = r"""#!/bin/sh
while :; do case $1 in
  --root) root=$2; shift 2;; --log|--log-format) shift 2;; --*) shift;; *) break;;
esac; done
cmd=$1; shift; pidfile=
while :; do case $1 in
  --pid-file) pidfile=$2; shift 2;; --bundle|--console-socket|--format) shift 2;; --*) shift;; *) break;;
esac; done
c=$root/$1
if [ "$cmd" = create ]; then
  mkfifo "$c.go" "$c.end" || exit 1
  (read x <"$c.go"; read x <"$c.end") </dev/null >/dev/null 2>&1 &
  echo $! >"$c.pid"; echo $! >"$pidfile"; exit
fi
read pid <"$c.pid" || { echo "container does not exist" >&2; exit 1; }
case $cmd in
start) echo >"$c.go";;
state) status=stopped; kill -0 "$pid" 2>/dev/null && status=running
  echo "{\"ociVersion\":\"1.0.2\",\"id\":\"$1\",\"pid\":$pid,\"status\":\"$status\"}";;
ps) echo "[$pid]";;
kill) kill -"$2" "$pid";;
delete) rm -f "$c.go" "$c.end" "$c.pid";;
*) echo "$cmd: not supported" >&2; exit 1;;
esac
"""

#: Containers the rehearsal runs through their lifecycle, side by side (9 measured no better, and
#: slower: docs/notes/rehearse2.md).
REHEARSAL_LIFECYCLES = 6
REHEARSAL_TIMEOUT = 10.0


def rehearse(*, lifecycle: bool = True) -> str:
    """Run a shim session inside a template process (the zygote) before it forks shims: a
    server on a private socket, a client making ``Connect``, a failing ``State``, a ``Create``
    that fails in the runtime (``false`` stands in for runc; its children are reaped; only
    without ``lifecycle``) and ``Shutdown``, with the shim's logging going nowhere.

    With ``lifecycle``, also what a pod's shim runs for its containers, each one through:
    ``Create`` (succeeding), ``Start``, ``State``, ``Pids``, ``Wait``, ``Kill``, the init's exit
    reaped, ``Delete``, with the task events published to a local sink (the daemon's part) —
    ``_STAND_IN_RUNTIME`` plays runc. This process is a child subreaper meanwhile (the
    "containers" are orphaned to it as runc's are to a shim), and is set back as it was.

    CPython 3.11 writes into a code object while it warms up and specializes it, and creates
    caches (type attribute caches, protobuf message classes, the event loop's machinery) on
    first use. Done here, once, those writes land on pages every forked shim then shares
    instead of copying. Best effort: the template keeps working when this fails (the return
    value says what failed, "" when nothing did), and it leaves no thread, no handler, no file
    and no child behind.
    """
    import asyncio
    import io

    from arun.shim import reaper
    from arun.shim.util import make_temp_dir, remove_tree

    trim_imports()
    base = make_temp_dir("arun-rehearsal-")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.raiseExceptions)
    sink = logging.StreamHandler(io.StringIO())
    sink.setFormatter(_JSONFormatter())
    subreaper: bool | None = None
    children: set[int] = set()
    failure = ""
    try:
        for h in saved[0]:
            root.removeHandler(h)
        root.addHandler(sink)
        root.setLevel(logging.INFO)
        os.mkdir(os.path.join(base, "b"))
        with open(os.path.join(base, "b", "config.json"), "w") as fh:
            fh.write("{}")
        if lifecycle:
            _write_lifecycle_files(base)
            children = _children()
            subreaper = reaper.is_child_subreaper()
            reaper.set_child_subreaper(True)
        events = asyncio.run(_rehearsal(base, lifecycle=lifecycle))
        if lifecycle and events != 4 * REHEARSAL_LIFECYCLES:  # create, start, exit, delete
            failure = f"{events} task events published, not {4 * REHEARSAL_LIFECYCLES}"
    except Exception as exc:  # a rehearsal that fails costs memory, nothing else
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        if subreaper is not None:
            _end_children(children)
            with contextlib.suppress(OSError):
                reaper.set_child_subreaper(subreaper)
        root.removeHandler(sink)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.raiseExceptions = saved[2]
        remove_tree(base)
    return failure


def _write_lifecycle_files(base: str) -> None:
    """The stand-in runtime (``rt``, state in ``runtime``) and the containers' bundles ``c0``,
    ``c1``… (each with a pid namespace of its own, as a pod's containers have)."""
    for i in range(REHEARSAL_LIFECYCLES):
        os.mkdir(os.path.join(base, f"c{i}"))
        with open(os.path.join(base, f"c{i}", "config.json"), "w") as fh:
            fh.write('{"linux": {"namespaces": [{"type": "pid"}]}}')
    rt = os.path.join(base, "rt")
    with open(rt, "w") as fh:
        fh.write(_STAND_IN_RUNTIME)
    os.chmod(rt, 0o755)
    os.makedirs(os.path.join(base, "runtime", "rehearsal"))  # --root: the stand-in's state


def _children() -> set[int]:
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as fh:
            pids.update(int(p) for p in fh.read().split())
    return pids


def _end_children(before: set[int]) -> None:
    """Kill and reap what a failed rehearsal left: every child this process has gained since
    ``before`` — runtime commands in flight, exited ones nobody reaped, "containers" (which are
    re-parented here when their runtime command is killed, hence the rounds)."""
    for _ in range(10):
        left = _children() - before
        if not left:
            return
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, _signal.SIGKILL)
                os.waitpid(pid, 0)


class _EventSink:
    """The daemon's end of the shim's event publisher: ``Events/Forward``, counted."""

    def __init__(self) -> None:
        self.received = 0

    async def Forward(self, r: Any) -> Any:
        from arun.shim import litepb

        self.received += 1
        return litepb.google_protobuf_Empty()


async def _rehearsal(base: str, *, lifecycle: bool = True) -> int:
    """The session; returns how many task events the daemon's stand-in received."""
    import asyncio

    from arun import errdefs
    from arun.errdefs import grpc as errgrpc
    from arun.shim import litepb, manager
    from arun.shim.events import EVENTS_SERVICE, NAMESPACE_HEADER
    from arun.shim.service import task_service
    from arun.shim.util import which
    from arun.ttrpc import Client, Server, ServiceStub
    from arun.ttrpc.service import ServiceTable

    path = os.path.join(base, "s")
    listener = manager.listen(path)
    if listener is None:
        return 0
    # A bundle (made by ``rehearse``) whose Create fails in the runtime: ``false`` stands in for
    # runc, so the Create path (options, runtime command, reaper, error report) runs without
    # creating anything.
    bundle = os.path.join(base, "b")
    false = which("false")
    events: Any = None
    sink = _EventSink()
    ttrpc_address = ""
    if lifecycle:
        events = Server()
        events.register(
            ServiceTable(
                EVENTS_SERVICE,
                {
                    "Forward": (
                        litepb.containerd_services_events_ttrpc_v1_ForwardRequest,
                        litepb.google_protobuf_Empty,
                    )
                },
            ),
            sink,
        )
        ttrpc_address = os.path.join(base, "e")
        await events.serve_unix(ttrpc_address)
    params = ServeParams(
        namespace="rehearsal",
        id="rehearsal",
        bundle=base,
        ttrpc_address=ttrpc_address,
        runc_binary=false or "",
        runc_root=os.path.join(base, "runtime"),
    )
    server = asyncio.create_task(_serve(params, listener.detach(), rehearsal=True))
    try:
        client = await Client.connect(
            path,
            timeout=5,
            from_status=errgrpc.from_code,
            metadata=lambda: [(NAMESPACE_HEADER, "rehearsal")],
        )
        try:
            v2, v2_table = task_service("containerd.task.v2.Task")
            v3, v3_table = task_service("containerd.task.v3.Task")
            for pb, table in ((v2, v2_table), (v3, v3_table)):
                task = ServiceStub(client, table)
                for _ in range(REHEARSAL_CALLS):
                    await task.Connect(pb.ConnectRequest(id="rehearsal"))
                    with contextlib.suppress(errdefs.NotFoundError):
                        await task.State(pb.StateRequest(id="nothing"))
                    if false and pb is v3 and not lifecycle:  # one version: both share the handlers' code
                        with contextlib.suppress(errdefs.ArunError):
                            await task.Create(pb.CreateTaskRequest(id="rehearsal", bundle=bundle))
            if lifecycle:
                async with asyncio.timeout(REHEARSAL_TIMEOUT):  # a runtime that hangs
                    await _lifecycles(
                        ServiceStub(client, v3_table), v3, os.path.join(base, "c"), os.path.join(base, "rt")
                    )
            await ServiceStub(client, v3_table).Shutdown(v3.ShutdownRequest(id="rehearsal"))
        finally:
            await client.close()
        await asyncio.wait_for(server, 10)
    finally:
        if not server.done():
            server.cancel()
            with contextlib.suppress(BaseException):
                await server
        if events is not None:
            await events.shutdown(0)
    return sink.received


async def _lifecycles(task: Any, pb: Any, bundle: str, runtime: str) -> None:
    """A pod's containers through the shim, side by side (as a pod's are; and runtime commands
    that overlap take less time)."""
    import asyncio

    from arun.shim import litepb

    options = litepb.google_protobuf_Any(
        type_url="containerd.runc.v1.Options",
        value=litepb.containerd_runc_v1_Options(binary_name=runtime).SerializeToString(),
    )
    try:
        async with asyncio.TaskGroup() as group:  # one that fails cancels the others
            for i in range(REHEARSAL_LIFECYCLES):
                group.create_task(_lifecycle(task, pb, f"rehearsal-{i}", f"{bundle}{i}", options))
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def _lifecycle(task: Any, pb: Any, cid: str, bundle: str, options: Any) -> None:
    """One container, the daemon's calls in its order (``Wait`` is asked before ``Kill``)."""
    import asyncio

    await task.Create(pb.CreateTaskRequest(id=cid, bundle=bundle, options=options))
    await task.Start(pb.StartRequest(id=cid))
    await task.State(pb.StateRequest(id=cid))
    await task.Pids(pb.PidsRequest(id=cid))
    waiting = asyncio.ensure_future(task.Wait(pb.WaitRequest(id=cid)))
    await asyncio.sleep(0)
    try:
        await task.Kill(pb.KillRequest(id=cid, signal=int(_signal.SIGKILL)))
        await waiting
    finally:
        if not waiting.done():
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
    await task.Delete(pb.DeleteRequest(id=cid))


def _to_status(exc: BaseException) -> tuple[int, str]:
    """The ttrpc status of a handler's error; errors nobody classified are logged once, here."""
    from arun import errdefs
    from arun.errdefs import grpc as errgrpc

    if errdefs.resolve(exc) is None:
        log.error("request failed", exc_info=exc)
    return errgrpc.code_of(exc), errgrpc.message_of(exc)


@dataclass
class _Ready:
    """What a shim runs before it knows its task: the loop's stop event (SIGTERM/SIGINT), the
    reaper, the ttrpc server with the task services registered (their handlers bound to the
    task's ``Shim`` once it exists)."""

    stop: Any
    reaper: Any
    server: Any
    apis: Any


def _prepare(*, rehearsal: bool = False) -> _Ready:
    """The task-independent part of a shim's start, on the running loop."""
    import asyncio

    from arun.shim.reaper import Reaper
    from arun.shim.service import TaskAPI
    from arun.ttrpc import Server, require_same_user

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if not rehearsal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [_signal.SIGTERM, _signal.SIGINT])
    reaper = Reaper()
    reaper.install(loop, subreaper=not rehearsal)
    server = Server(to_status=_to_status, peer_check=require_same_user)
    apis = [TaskAPI(None, name) for name in ("containerd.task.v2.Task", "containerd.task.v3.Task")]
    for api in apis:
        server.register(api.table, api)
    return _Ready(stop, reaper, server, apis)


async def _serve(params: ServeParams, listener_fd: int, *, rehearsal: bool = False) -> None:
    await _run(params, listener_fd, _prepare(rehearsal=rehearsal))


async def _run(params: ServeParams, listener_fd: int, ready: _Ready) -> None:
    from arun.shim.events import EventQueue, TTRPCForwarder
    from arun.shim.mount import SysMounter
    from arun.shim.service import RuntimeOptions, Shim

    stop, reaper, server = ready.stop, ready.reaper, ready.server
    forwarder = TTRPCForwarder(params.ttrpc_address) if params.ttrpc_address else None
    events = EventQueue(forwarder, params.namespace)
    events.start()
    shim = Shim(
        namespace=params.namespace,
        reaper=reaper,
        events=events,
        mounter=SysMounter(),
        defaults=RuntimeOptions(
            binary_name=params.runc_binary, root=params.runc_root, systemd_cgroup=params.systemd_cgroup
        ),
        watch_oom=True,
        on_shutdown=stop.set,
    )
    for api in ready.apis:
        api.bind(shim)
    sock = socket.socket(fileno=listener_fd)
    path = sock.getsockname()
    await server.serve_socket(sock)
    log.info("shim %s serving on %s (namespace %s)", params.id, path, params.namespace)
    try:
        await stop.wait()
    finally:
        log.info("shim %s shutting down", params.id)
        await server.shutdown(SHUTDOWN_GRACE)
        await events.close(EVENTS_GRACE)
        shim.close()
        reaper.uninstall()
        if isinstance(path, str) and path and not path.startswith("\0"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def main_serve(namespace: str, id: str, debug: bool, socket_path: str) -> int:
    """``containerd-shim-arun-v1 -namespace N -id ID …`` without an action: serve on fd 3 (or on
    ``-socket``, created here)."""
    params = ServeParams.from_environment(namespace, id, os.getcwd(), debug, dict(os.environ))
    if socket_path:
        from arun.shim.manager import listen

        listener = listen(socket_path)
        if listener is None:
            sys.stderr.write(f"a shim already listens on {socket_path}\n")
            return 1
        fd = listener.detach()
    else:
        fd = 3
    return serve(params, fd)
