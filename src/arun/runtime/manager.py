"""The runtime v2 manager: shims started, reconnected and cleaned up; tasks in them.

``ShimManager`` (plugin ``io.containerd.shim.v1.manager``) turns a runtime name into a
running shim: it resolves the binary, and starts it through the zygote (arun's own
shim, when the zygote is up) or through the binary's ``start`` command (any shim),
and runs ``delete`` after a shim that is gone.

``TaskManager`` (plugin ``io.containerd.runtime.v2.task``, ``core.runtime.TaskRuntime``)
keeps the tasks of every namespace, one ttrpc connection each — several tasks of a pod
share one shim process (the shim's ``start`` returns the address of the pod's live
shim), and a task's ``delete`` sends ``Shutdown`` only when no other task uses that
shim.

When a task's connection closes without the task having been deleted (the shim died
or was killed), the shim's ``delete`` command cleans up (kills what is left of the
container, unmounts its rootfs), ``/tasks/exit`` and ``/tasks/delete`` are published
with the status it reports (255 if it could not), and the bundle goes away.

On start-up every bundle left in the state directory is reloaded in parallel, each
under its own deadline: connect, ``Connect`` within 5 s, and register the task — or,
for a shim that is gone or hung, clean up as above. A task that exited while the daemon
was down is reloaded like any other: ``State`` and ``Wait`` report its exit status, and
the shim re-sends the ``/tasks/exit`` it could not deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import stat
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import timestamp_pb2

from arun import identifiers, namespaces
from arun.api.containerd.events import task_pb2 as events_pb2
from arun.core.runtime import (
    TASK_DELETE,
    TASK_EXIT,
    UNKNOWN_EXIT_STATUS,
    AnyValue,
    CreateOpts,
    Exit,
)
from arun.errdefs import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
)
from arun.runtime import binary as binarymod
from arun.runtime import bundle as bundlemod
from arun.runtime import ksm
from arun.runtime.binary import BootstrapResult, Resolver, ShimBinary, ShimEnv
from arun.runtime.bundle import Bundle
from arun.runtime.shim import SHUTDOWN_TIMEOUT, ShimConnection, ShimGoneError, ShimTask
from arun.runtime.shimlog import ShimLog
from arun.runtime.zygote import Zygote, ZygoteError

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 5.0  # io.containerd.timeout.shim.load
CLEANUP_TIMEOUT = 5.0  # io.containerd.timeout.shim.cleanup
LOAD_CONCURRENCY = 16
MAX_SOCKET_DIR = 42  # so that <dir>/<64 hex> fits a unix socket address (containerd's limit)


class Publisher(Protocol):
    async def publish(self, topic: str, event: object) -> None: ...


class ContainerLookup(Protocol):
    """The container store, for the runtime name of a bundle without ``shim-binary-path``."""

    async def get(self, id: str) -> Any: ...


# -- shims -----------------------------------------------------------------------------------------


@dataclass
class ShimManagerConfig:
    """``[plugins."io.containerd.shim.v1.manager"]``."""

    # Extra environment for every shim command (containerd's ``env``, e.g. SCHED_CORE=1).
    env: dict[str, str] = field(default_factory=dict)
    # Where arun's shims put their sockets; empty: ``<state>/s``. At most 42 characters.
    socket_dir: str = ""
    # Start arun's own shims by forking a pre-imported template process (arun only).
    zygote: bool = True
    # Kernel same-page merging of the zygote's shims (arun only; see arun.runtime.ksm): "on"
    # marks their memory mergeable and starts the kernel's scanner when it is stopped, "mark"
    # only marks (the host's /sys/kernel/mm/ksm/run is left as it is), "off" does neither.
    ksm: str = "on"


# The least time between two starts of the shim zygote (see ShimManager._revive_zygote).
ZYGOTE_RETRY_DELAY = 10.0


class ShimManager:
    """Resolves, starts and cleans up after shim binaries."""

    def __init__(
        self,
        env: ShimEnv,
        *,
        use_zygote: bool = True,
        resolver: Resolver | None = None,
        merge_memory: bool = False,
    ) -> None:
        self.env = env
        # Whether the zygote marks its memory mergeable (arun.runtime.ksm).
        self.merge_memory = merge_memory
        self.resolver = resolver or Resolver()
        self.use_zygote = use_zygote
        self.zygote: Zygote | None = None
        self._zygote_task: asyncio.Task[None] | None = None
        # How the last shims were started (for benchmarks and tests): "zygote" or "binary".
        self.started: dict[str, int] = {"zygote": 0, "binary": 0}
        self._zygote_revived_at = -ZYGOTE_RETRY_DELAY

    def _revive_zygote(self) -> None:
        """Start a new zygote when the last one died (killed from outside, say): otherwise every
        later shim would start from the binary, a fresh Python each. At most one attempt every
        ZYGOTE_RETRY_DELAY seconds; shims start from the binary until the new one is ready."""
        z, task = self.zygote, self._zygote_task
        if not self.use_zygote or z is None or z.ready or task is None or not task.done():
            return
        if time.monotonic() - self._zygote_revived_at < ZYGOTE_RETRY_DELAY:
            return
        self._zygote_revived_at = time.monotonic()
        log.info("starting a new shim zygote")
        self._zygote_task = None
        self.start_zygote()

    def start_zygote(self) -> None:
        """Start the zygote in the background; shims start from the binary until it is ready."""
        if not self.use_zygote or self._zygote_task is not None:
            return
        env = self.env.environment("")
        if self.merge_memory:
            env[ksm.ENV] = "1"
        self.zygote = Zygote(env=env)
        self._zygote_task = asyncio.get_running_loop().create_task(self._run_zygote(), name="shim-zygote")

    async def _run_zygote(self) -> None:
        assert self.zygote is not None
        try:
            await self.zygote.start()
        except Exception:
            log.warning("shim zygote failed to start; shims start from the binary", exc_info=True)

    async def wait_zygote(self) -> bool:
        """Wait for the zygote's start-up; whether it is usable."""
        if self._zygote_task is not None:
            await asyncio.shield(self._zygote_task)
        return self.zygote is not None and self.zygote.ready

    def resolve(self, runtime: str) -> ShimBinary:
        return self.resolver.resolve(runtime)

    async def start(self, shim: ShimBinary, bundle: Bundle, options: AnyValue | None) -> BootstrapResult:
        """Start (or join) the shim of a new task in ``bundle``."""
        ns, id = bundle.namespace, bundle.id
        if shim.builtin:
            self._revive_zygote()
        if shim.builtin and self.zygote is not None and self.zygote.ready:
            try:
                out, _ = await self.zygote.spawn(
                    namespace=ns,
                    id=id,
                    bundle=str(bundle.path),
                    grpc_address=self.env.grpc_address,
                    ttrpc_address=self.env.ttrpc_address,
                    socket_dir=self.env.socket_dir,
                    debug=self.env.debug,
                    options=binarymod.options_any(options),
                )
            except ZygoteError as e:
                log.warning("zygote start failed, using the binary", extra={"id": id, "error": str(e)})
                self._revive_zygote()
            else:
                self.started["zygote"] += 1
                return binarymod.parse_start_output(out)
        self.started["binary"] += 1
        return await binarymod.start(shim, self.env, bundle.path, ns, id, options)

    async def delete(self, shim: ShimBinary, bundle: Bundle) -> Exit:
        return await binarymod.delete(shim, self.env, bundle.path, bundle.namespace, bundle.id)

    async def close(self) -> None:
        task, self._zygote_task = self._zygote_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.zygote is not None:
            await self.zygote.close()


def remove_stale_socket(address: str) -> bool:
    """Remove the unix socket file of ``address`` if nothing listens on it any more (its shim
    died); a socket a live shim serves, an abstract or non-unix address is left alone."""
    if address.startswith("unix://"):
        path = address[len("unix://") :]
    elif address.startswith("/"):
        path = address
    else:
        return False
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except ConnectionRefusedError:
            pass  # a socket file without a listener
        except OSError:
            return False  # gone already, not a socket, or busy: not ours to judge
        else:
            return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    log.info("removed the socket of a dead shim", extra={"address": address})
    return True


def default_socket_dir(state: str) -> str:
    d = os.path.join(state, "s")
    if len(d) > MAX_SOCKET_DIR:
        d = "/run/arun/s"
        log.warning(
            "the state directory is too long for shim sockets; using %s (set socket_dir in "
            '[plugins."io.containerd.shim.v1.manager"])',
            d,
        )
    return d


def check_socket_dir(d: str) -> str:
    if not os.path.isabs(d):
        raise InvalidArgumentError(f"shim socket_dir {d!r} must be an absolute path")
    if len(d) > MAX_SOCKET_DIR:
        raise InvalidArgumentError(
            f"shim socket_dir {d!r} is longer than {MAX_SOCKET_DIR} characters "
            "(the socket path would not fit)"
        )
    return d


# -- tasks -----------------------------------------------------------------------------------------


def _ts(dt: datetime | None) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt or datetime.now(UTC))
    return ts


@dataclass
class TaskManagerConfig:
    """``[plugins."io.containerd.runtime.v2.task"]`` (containerd 1.6's keys)."""

    platforms: list[str] = field(default_factory=list)
    sched_core: bool = False


class TaskManager:
    """``core.runtime.TaskRuntime``: the tasks of all namespaces, in their shims."""

    def __init__(
        self,
        root: Path,
        state: Path,
        shims: ShimManager,
        *,
        publisher: Publisher | None = None,
        containers: ContainerLookup | None = None,
    ) -> None:
        self.root = root
        self.state = state
        self.shims = shims
        self.publisher = publisher
        self.containers = containers
        self._tasks: dict[tuple[str, str], ShimTask] = {}
        self._reserved: set[tuple[str, str]] = set()
        self._logs: dict[int, ShimLog] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- core.runtime.TaskRuntime -------------------------------------------------------------

    async def create(self, id: str, opts: CreateOpts) -> ShimTask:
        ns = namespaces.required()
        identifiers.validate(id)
        key = (ns, id)
        if key in self._tasks or key in self._reserved:
            raise AlreadyExistsError(f"task {id!r}: already exists")
        self._reserved.add(key)
        try:
            shim = self.shims.resolve(opts.runtime)
            # A few small files and directories: cheaper inline than a thread hop.
            b = bundlemod.create(self.root, self.state, ns, id, opts.spec)
            task: ShimTask | None = None
            shim_log: ShimLog | None = None
            record: asyncio.Future[None] | None = None
            try:
                shim_log = await ShimLog.open(b.file(bundlemod.LOG), ns, id)
                result = await self.shims.start(shim, b, opts.task_options or opts.runtime_options)
                # bootstrap.json and shim-binary-path (for restarts) are written while the shim
                # creates the task.
                record = asyncio.ensure_future(asyncio.to_thread(_record_start, b, shim, result))
                task = await self._connect(b, shim, result, opts.runtime, shim_log)
                self._tasks[key] = task
                await task.create(opts)
                await record
            except BaseException:
                if record is not None:
                    await asyncio.gather(record, return_exceptions=True)
                await asyncio.shield(self._undo_create(key, b, task, shim_log))
                raise
            return task
        finally:
            self._reserved.discard(key)

    async def get(self, id: str) -> ShimTask:
        ns = namespaces.required()
        task = self._tasks.get((ns, id))
        if task is None:
            raise NotFoundError(f"task {id!r} not found")
        return task

    async def tasks(self, all: bool = False) -> list[ShimTask]:
        if all:
            return list(self._tasks.values())
        ns = namespaces.required()
        return [t for (tns, _), t in self._tasks.items() if tns == ns]

    async def delete(self, id: str) -> Exit:
        task = await self.get(id)
        key = (task.namespace, task.id)
        try:
            exit = await task.delete_task()
        except ShimGoneError:
            # The shim is gone: its clean-up (delete command, events) is under way.
            await self._wait_closed(task)
            raise NotFoundError(f"task {id!r}: its shim exited") from None
        task.deleted = True
        if self._tasks.get(key) is task:
            del self._tasks[key]
        await asyncio.shield(self._release(task))
        return exit

    # -- in-process helpers --------------------------------------------------------------------

    def task_of(self, namespace: str, id: str) -> ShimTask | None:
        return self._tasks.get((namespace, id))

    def shares_shim(self, task: ShimTask) -> list[ShimTask]:
        """Other tasks served by the same shim process (the same socket)."""
        return [t for t in self._tasks.values() if t is not task and t.address == task.address]

    # -- internals -----------------------------------------------------------------------------

    async def _connect(
        self,
        b: Bundle,
        shim: ShimBinary,
        result: BootstrapResult,
        runtime: str,
        shim_log: ShimLog | None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> ShimTask:
        holder: list[ShimTask] = []

        def on_close() -> None:
            if holder:
                self._on_close(holder[0])

        kwargs = {} if timeout is None else {"timeout": timeout}
        conn = await ShimConnection.connect(result, b.namespace, on_close, **kwargs)
        task = ShimTask(
            id=b.id,
            namespace=b.namespace,
            runtime=runtime,
            bundle=b,
            binary=shim,
            bootstrap=result,
            conn=conn,
        )
        holder.append(task)
        if shim_log is not None:
            self._logs[id(task)] = shim_log
        if conn.closed:  # closed before the callback could see the task
            self._on_close(task)
        return task

    async def _undo_create(
        self, key: tuple[str, str], b: Bundle, task: ShimTask | None, shim_log: ShimLog | None
    ) -> None:
        """Take back a failed create: no task, no shim of its own, no bundle, no events."""
        if task is not None:
            if self._tasks.get(key) is task:
                del self._tasks[key]
            try:
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    await task.delete_task()
                task.deleted = True
            except Exception as e:
                log.debug("delete after a failed create", extra={"id": task.id, "error": str(e)})
            await self._release(task)
        else:
            if shim_log is not None:
                shim_log.close()
            try:
                await asyncio.to_thread(b.delete)
            except OSError as e:
                log.warning("removing bundle failed", extra={"id": b.id, "error": str(e)})

    async def _release(self, task: ShimTask) -> None:
        """After a task is gone from its shim: shut the shim down unless another task uses it,
        close the connection, wait for its clean-up, remove the bundle."""
        if not self.shares_shim(task):
            try:
                async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                    await task.shutdown()
            except Exception as e:
                log.warning("shim shutdown failed", extra={"id": task.id, "error": str(e)})
        await task.conn.close()
        await self._wait_closed(task)
        try:
            await asyncio.to_thread(task.bundle.delete)
        except OSError as e:
            log.warning("removing bundle failed", extra={"id": task.id, "error": str(e)})

    async def _wait_closed(self, task: ShimTask) -> None:
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT * 2):
                await task.closed.wait()
        except TimeoutError:
            log.warning("shim clean-up still running", extra={"id": task.id})

    def _on_close(self, task: ShimTask) -> None:
        """The connection of ``task`` closed (called from the ttrpc client)."""
        if self._closing:
            self._close_log(task)
            task.closed.set()
            return
        t = asyncio.get_running_loop().create_task(self._after_close(task), name=f"shim-closed-{task.id}")
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    def _close_log(self, task: ShimTask) -> None:
        shim_log = self._logs.pop(id(task), None)
        if shim_log is not None:
            shim_log.close()

    async def _after_close(self, task: ShimTask) -> None:
        try:
            if not task.deleted:
                with namespaces.use(task.namespace):
                    await self._cleanup_dead(
                        task.namespace, task.id, task.binary, task.bundle, task.init_pid, task, task.address
                    )
        except Exception:
            log.exception("cleaning up after a shim failed", extra={"id": task.id})
        finally:
            self._close_log(task)
            task.closed.set()

    async def _cleanup_dead(
        self,
        ns: str,
        id: str,
        shim: ShimBinary,
        b: Bundle,
        pid: int,
        task: ShimTask | None,
        address: str | None = None,
    ) -> None:
        """The shim of task ``id`` went away while the task existed (containerd's
        ``cleanupAfterDeadShim``): run the shim's ``delete``, publish the exit if the task is
        still registered (``task``) or was found dead at start-up (``task`` None), remove the
        bundle."""
        key = (ns, id)
        log.warning("cleaning up after shim disconnected", extra={"id": id, "namespace": ns})
        exit: Exit | None = None
        try:
            exit = await self.shims.delete(shim, b)
        except Exception as e:
            log.warning("failed to clean up after shim disconnected", extra={"id": id, "error": str(e)})
        if address:
            # A shim killed outright leaves its socket file (in the shared socket directory).
            await asyncio.to_thread(remove_stale_socket, address)
        publish = task is None
        if task is not None and self._tasks.get(key) is task:
            del self._tasks[key]
            publish = True
        if publish:
            if exit is None:
                exit = Exit(pid, UNKNOWN_EXIT_STATUS, None)
            elif not exit.pid and pid:
                exit = Exit(pid, exit.status, exit.timestamp)
            await self._publish_exit(id, exit)
        try:
            await asyncio.to_thread(b.delete)
        except OSError as e:
            log.warning("removing bundle failed", extra={"id": id, "error": str(e)})

    async def _publish_exit(self, id: str, exit: Exit) -> None:
        if self.publisher is None:
            return
        at = _ts(exit.timestamp)
        pid = exit.pid
        await self.publisher.publish(
            TASK_EXIT,
            events_pb2.TaskExit(container_id=id, id=id, pid=pid, exit_status=exit.status, exited_at=at),
        )
        await self.publisher.publish(
            TASK_DELETE,
            events_pb2.TaskDelete(container_id=id, pid=pid, exit_status=exit.status, exited_at=at),
        )

    # -- restart -------------------------------------------------------------------------------

    async def load_existing(self) -> None:
        """Reload every bundle under the state directory (in parallel, each under its deadline)."""
        found = await asyncio.to_thread(_scan_bundles, self.state)
        limit = asyncio.Semaphore(LOAD_CONCURRENCY)

        async def one(ns: str, id: str) -> None:
            async with limit:
                with namespaces.use(ns):
                    try:
                        await self._load(ns, id)
                    except Exception:
                        log.exception("loading task failed", extra={"namespace": ns, "id": id})

        await asyncio.gather(*(one(ns, id) for ns, id in found))
        await asyncio.to_thread(self._cleanup_work_dirs)
        if found:
            log.info("reloaded tasks", extra={"found": len(found), "live": len(self._tasks)})

    async def _load(self, ns: str, id: str) -> None:
        b = bundlemod.Bundle(id, ns, self.state / ns / id, self.root / ns / id)
        if not await asyncio.to_thread(_has_files, b.path):
            await asyncio.to_thread(b.delete)
            return
        recorded = (await asyncio.to_thread(b.read, bundlemod.SHIM_BINARY_PATH) or "").strip()
        runtime = recorded
        if not runtime and self.containers is not None:
            try:
                container = await self.containers.get(id)
                runtime = str(container.runtime.name)
            except Exception as e:
                log.warning("loading container of a bundle failed", extra={"id": id, "error": str(e)})
        try:
            shim = self.shims.resolve(runtime)
        except Exception as e:
            log.error("cannot resolve the shim of a bundle; removing it", extra={"id": id, "error": str(e)})
            await asyncio.to_thread(b.delete)
            return
        result = await asyncio.to_thread(_read_bootstrap, b)
        shim_log = await ShimLog.open(b.file(bundlemod.LOG), ns, id)
        task: ShimTask | None = None
        try:
            if result is None:
                raise NotFoundError("bundle has neither bootstrap.json nor address")
            async with asyncio.timeout(LOAD_TIMEOUT):
                task = await self._connect(b, shim, result, runtime, shim_log, timeout=LOAD_TIMEOUT)
                await task.connect()
        except Exception as e:
            log.warning("shim of a bundle is gone; cleaning up", extra={"id": id, "error": repr(e)})
            if task is not None:
                task.deleted = True  # this clean-up is done here, not by the close callback
                await task.conn.close()
            shim_log.close()
            await self._cleanup_dead(ns, id, shim, b, 0, None, result.address if result else None)
            return
        if task.conn.closed:
            return  # closed right away: the close callback cleans up
        self._tasks[(ns, id)] = task
        log.info("connected to shim", extra={"id": id, "namespace": ns, "pid": task.init_pid})

    def _cleanup_work_dirs(self) -> None:
        try:
            nss = [d for d in os.scandir(self.root) if d.is_dir() and not d.name.startswith(".")]
        except FileNotFoundError:
            return
        for nsd in nss:
            for d in os.scandir(nsd.path):
                if (nsd.name, d.name) not in self._tasks and not (self.state / nsd.name / d.name).exists():
                    shutil.rmtree(d.path, ignore_errors=True)

    # -- shutdown ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Let go of every shim without touching it: they keep running for the next daemon."""
        self._closing = True
        for task in list(self._tasks.values()):
            with contextlib.suppress(Exception):
                await task.conn.close()
            self._close_log(task)
        for shim_log in list(self._logs.values()):
            shim_log.close()
        self._logs.clear()
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


def _record_start(b: Bundle, shim: ShimBinary, result: BootstrapResult) -> None:
    b.write(bundlemod.BOOTSTRAP, result.to_json())
    b.write(bundlemod.SHIM_BINARY_PATH, shim.recorded)


def _read_bootstrap(b: Bundle) -> BootstrapResult | None:
    text = b.read(bundlemod.BOOTSTRAP)
    if text is not None:
        try:
            return BootstrapResult.from_json(text)
        except ValueError as e:
            log.warning("invalid bootstrap.json", extra={"id": b.id, "error": str(e)})
    address = b.read(bundlemod.ADDRESS)
    if address and address.strip():
        # A bundle of a 1.x-style shim: migrate to bootstrap.json (version 2, ttrpc).
        result = BootstrapResult(2, address.strip(), "ttrpc")
        with contextlib.suppress(OSError):
            b.write(bundlemod.BOOTSTRAP, result.to_json())
        return result
    return None


def _has_files(path: Path) -> bool:
    try:
        with os.scandir(path) as it:
            return any(True for _ in it)
    except FileNotFoundError:
        return False


def _scan_bundles(state: Path) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    try:
        nss = sorted(d.name for d in os.scandir(state) if d.is_dir() and not d.name.startswith("."))
    except FileNotFoundError:
        return found
    for ns in nss:
        try:
            identifiers.validate(ns)
        except InvalidArgumentError:
            continue
        for d in sorted(os.scandir(state / ns), key=lambda e: e.name):
            if d.is_dir(follow_symlinks=False) and not d.name.startswith("."):
                found.append((ns, d.name))
    return found


def shim_env(
    grpc_address: str,
    ttrpc_address: str,
    socket_dir: str,
    *,
    debug: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> ShimEnv:
    from arun.version import VERSION

    publish = shutil.which("arun") or (sys.argv[0] if sys.argv and os.path.isabs(sys.argv[0]) else "")
    return ShimEnv(
        grpc_address=grpc_address,
        ttrpc_address=ttrpc_address,
        publish_binary=publish or sys.executable,
        socket_dir=socket_dir,
        debug=debug,
        version=VERSION,
        extra_env=dict(extra_env or {}),
    )
