"""The zygote: a pre-imported process that forks arun shims.

A fresh Python costs ~150 ms and ~20 MB to start; a fork of a process that has
already imported the shim costs a few milliseconds, and its pages stay shared
copy-on-write with every other shim forked from it (``gc.freeze()`` keeps the
collector from writing to, and so un-sharing, the imported objects).

The daemon starts the zygote as ``python -OO -m arun.runtime.zygote <fd>`` with one end
of a ``SOCK_SEQPACKET`` socketpair as ``<fd>``. Once warm (``warm()``) the zygote does
nothing but fork: a byte in, a *spare* out — forked through an intermediate child that
exits at once (so the spare is re-parented to init or the nearest subreaper, never a
child of the zygote or of the daemon), in a session of its own, waiting on a socketpair
with its event loop, reaper and ttrpc server already running
(``arun.shim.server.serve_prepared``); the zygote sends back its pid and the other end
of that socketpair (``SCM_RIGHTS``). Any page the zygote wrote between two forks would
stop being shared with the spares forked after, so it runs no other code.

Starts are handled in the daemon (:class:`Zygote`), which holds the spares. A start
carries what the shim's ``start`` command would read from a ``BootstrapParams`` on its
stdin (the task's namespace and id, the daemon's addresses, the socket directory, the
runtime options) and its bundle, and gives what ``start`` would print. The two ways are
the same from the outside: the same socket path (grouping by the sandbox annotation
included: a live shim of the pod is reused), the same files in the bundle (``shim.pid``,
``address``, the ``s`` link), the same ``BootstrapResult``. The daemon binds the shim's
socket and hands it to a spare with its parameters; the spare becomes the shim of that
task (its stdio, log and task service). The spares used up are forked again once starts
have paused for ``REPLENISH_DELAY`` (at once when none is left), so that the fork does
not compete with the shim just started.

When the daemon goes away the zygote and the waiting spares read end-of-file and exit;
the shims live on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    import subprocess

# asyncio is imported where the daemon's end uses it: in the zygote process, the shim's
# ``preload`` must import it first (without ``ssl``, which the shim never needs).

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 20
SPARES = 2  # pre-forked shims kept waiting
ACK_TIMEOUT = 5.0
READY_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
# How long the daemon must be quiet after a start before the zygote forks replacement spares.
REPLENISH_DELAY = float(os.environ.get("ARUN_ZYGOTE_REPLENISH_DELAY", "0.25"))


def python_flags(env: Mapping[str, str]) -> list[str]:
    """The interpreter's flags for the zygote: ``-OO`` (no docstrings, no ``assert``), which
    leaves ~0.5 MiB less in the image every shim shares. Nothing the shim runs reads a
    docstring or relies on an ``assert`` (they only narrow types).

    ``ARUN_ZYGOTE_OPTIMIZE`` = 0, 1 or 2 chooses the level. By default it is 2 unless the
    plain compiled code is cached and the ``-OO`` one is not and cannot be (a read-only
    install holding only ``*.pyc``): code compiled in memory at each start leaves ~1 MiB
    more in the image than code loaded from a cache, more than ``-OO`` saves."""
    level = env.get("ARUN_ZYGOTE_OPTIMIZE", "")
    if not level:
        level = "2" if _optimized_code_loads_as_well(env) else "0"
    return {"0": [], "1": ["-O"]}.get(level, ["-OO"])


def _optimized_code_loads_as_well(env: Mapping[str, str]) -> bool:
    """Whether the zygote's own code and the stdlib's asyncio come from a cache at ``-OO``
    wherever they would without it (cached, or cacheable by the zygote's first start)."""
    import asyncio.base_events
    import importlib.util

    writes = not env.get("PYTHONDONTWRITEBYTECODE")

    def from_cache(source: str, level: int) -> bool:
        cached = importlib.util.cache_from_source(source, optimization=level or "")
        if os.path.exists(cached):
            return True
        directory = os.path.dirname(cached)  # made by the first import that writes there
        return writes and os.access(
            directory if os.path.isdir(directory) else os.path.dirname(directory), os.W_OK
        )

    for source in (__file__, asyncio.base_events.__file__):
        if source and from_cache(source, 0) and not from_cache(source, 2):
            return False
    return True


# -- the zygote process ---------------------------------------------------------------------------


def _fork_detached() -> tuple[int, socket.socket]:
    """Fork a spare through an intermediate that exits at once (the spare is re-parented, in a
    session of its own): its pid and the other end of its socket (for the daemon)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the intermediate
        code = 1
        try:
            os.close(r)
            ours.close()
            spare = os.fork()
            if spare == 0:
                code = 1
                try:
                    os.close(w)
                    code = _spare_main(theirs)
                finally:
                    os._exit(code)
            os.write(w, str(spare).encode())
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        raw = fh.read()  # written by the intermediate right after its fork; EOF when it exits
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)
    if not raw:
        ours.close()
        raise RuntimeError("forking a spare shim failed")
    return int(raw), ours


def _fork_loop(sock: socket.socket) -> int:
    """The zygote's loop once warm: a byte in, a spare out (its pid, and the daemon's end of its
    socket); end-of-file: exit."""
    recv, send_fds, fork = sock.recv, socket.send_fds, _fork_detached
    while True:
        try:
            data = recv(1)
        except InterruptedError:
            continue
        except OSError:
            return 1
        if not data:
            return 0
        try:
            pid, ours = fork()
        except (OSError, RuntimeError):
            send_fds(sock, [b"-"], [])  # an empty message would read as end-of-file
            continue
        send_fds(sock, [str(pid).encode()], [ours.fileno()])
        ours.close()


def _spare_main(sock: socket.socket) -> int:
    """Life of a spare: be a shim-in-waiting (its event loop, reaper and server already up,
    ``server.serve_prepared``) until the daemon's go, then serve that task."""
    os.setsid()
    fd = sock.fileno()
    # Nothing of the zygote's: not its socket to the daemon.
    os.closerange(3, fd)
    os.closerange(fd + 1, 1 << 16)
    from arun.shim import server

    async def activation() -> tuple[server.ServeParams, int] | None:
        # Here, not at the top: the zygote runs this module as __main__, and asyncio imported
        # before warm() would load ssl (``server.trim_imports``).
        from arun.asyncutil import readable

        await readable(fd)
        try:
            msg, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
        except OSError:
            return None
        if not msg or not fds:
            for extra in fds:
                os.close(extra)
            return None  # the zygote let go of us, or is gone
        try:
            sock.sendall(b"ok")
        except OSError:
            os.close(fds[0])
            return None
        sock.close()
        req = json.loads(msg)
        # The shim's environment is the zygote's (inherited) with a few changes: made one by
        # one, not by rebuilding os.environ, which would touch (and copy) far more of the
        # shared heap.
        for key in req["unset"]:
            os.environ.pop(key, None)
        for key, value in req["set"].items():
            os.environ[key] = value
        params = server.ServeParams.from_environment(
            req["namespace"], req["id"], req["bundle"], req["debug"], os.environ
        )
        _set_name(b"arun-shim", _command_line(params))
        return params, fds[0]

    return server.serve_prepared(activation)


SHIM_NAME = "containerd-shim-arun-v1"


def _command_line(params: Any) -> bytes:
    """What ``ps`` shows for a forked shim: the command line it would have had if the
    ``start`` binary had launched it."""
    words = [SHIM_NAME, "-namespace", params.namespace, "-id", params.id]
    if params.grpc_address:
        words += ["-address", params.grpc_address]
    return " ".join(words).encode()


def _set_name(name: bytes, cmdline: bytes = b"") -> None:
    """The process name in ``ps``: comm and, when given, the command line, written over the
    argument area the kernel reads ``/proc/PID/cmdline`` from (the zygote's own
    ``python -OO -m arun.runtime.zygote N``, so what does not fit is cut off). Through ``/proc``
    rather than ctypes, which would cost the shim a few hundred KiB of copied pages."""
    try:
        with open("/proc/self/comm", "wb") as fh:
            fh.write(name[:15])
        if cmdline:
            with open("/proc/self/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
            size = end - start
            if size > 1:
                with open("/proc/self/mem", "r+b", buffering=0) as mem:
                    mem.seek(start)
                    mem.write(cmdline[: size - 1].ljust(size, b"\0"))
    except (OSError, ValueError, IndexError):
        pass


# Modules a shim imports only when it first needs them (runtime options, OOM and metrics,
# events): imported here they are shared by every shim instead of loaded into each.
_LAZY = (
    "json",
    "resource",  # os.wait4 imports it on its first reaped child
    "arun.shim.manager",
    "arun.shim.wire",
    "arun.shim.events",
    "arun.shim.mount",
    "arun.shim.reaper",
    "arun.shim.process.init",
    "arun.shim.process.exec",
    "arun.errdefs.grpc",
    "arun.shim.litepb",
)


_ballast: list[object] = []


def _allocator_holes() -> dict[int, int]:
    """Free blocks in the object allocator's partly used pools, by block size (from
    ``sys._debugmallocstats()``, which writes to the C-level stderr)."""
    holes: dict[int, int] = {}
    debugmallocstats = getattr(sys, "_debugmallocstats", None)
    if debugmallocstats is None:
        return holes
    # A memory file, not ``tempfile`` (which would stay imported in every shim's image).
    with open(os.memfd_create("arun-mallocstats", os.MFD_CLOEXEC), "w+b") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 5 and all(f.isdigit() for f in fields):
            holes[int(fields[1])] = int(fields[4])
    return holes


def fill_allocator_holes() -> int:
    """Fill the free blocks of the allocator's partly used pools with objects the zygote keeps.

    The imports and the rehearsal leave holes in thousands of pools; a forked shim would put
    its first objects there, writing into (and so copying) pages shared with every other
    shim. Filled, the shim's objects go to fresh pools it owns anyway. Returns the number of
    blocks filled."""
    filled = 0
    for size, free in _allocator_holes().items():
        # bytes of length n take 33 + n bytes (header, NUL): the block size class
        n = size - 33
        if n < 1 or free <= 0:
            continue
        _ballast.extend(bytes(n) for _ in range(free))
        filled += free
    return filled


def warm(merge: bool = False) -> None:
    """Import what a shim will run, then freeze the collector's view of it (``preload``);
    with ``merge``, mark the memory for the kernel's same-page merging (``arun.runtime.ksm``)."""
    import gc
    import importlib

    from arun.shim import server

    server.preload()
    for name in _LAZY:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if merge:
        importlib.import_module("ctypes")  # before the freeze, so that shims share it
    rehearsal = os.environ.get("ARUN_ZYGOTE_REHEARSAL", "1")
    if rehearsal != "0":
        # "basic": without the containers' lifecycle (for comparisons)
        failure = server.rehearse(lifecycle=rehearsal != "basic")
        if failure:
            sys.stderr.write(f"arun zygote: the rehearsal failed (shims will copy more memory): {failure}\n")
    # The rehearsal may format a traceback: the source lines it read stay in linecache (~150 KiB
    # with their string objects), which a shim needs only if it logs one.
    import linecache

    linecache.clearcache()
    gc.collect()
    if os.environ.get("ARUN_ZYGOTE_FILL", "1") != "0":
        fill_allocator_holes()
    gc.freeze()
    if merge:
        from arun.runtime import ksm

        try:
            ksm.mark()
        except OSError as e:
            sys.stderr.write(f"arun zygote: cannot mark memory mergeable: {e}\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit():
        sys.stderr.write("usage: python -m arun.runtime.zygote <socket fd>\n")
        return 2
    sock = socket.socket(fileno=int(args[0]))
    sock.setblocking(True)
    # Popped (it is ``arun.runtime.ksm.ENV``), so that it does not travel on into shims and runc.
    warm(merge=os.environ.pop("ARUN_ZYGOTE_KSM", "") == "1")
    try:
        sock.sendall(json.dumps({"ready": os.getpid()}).encode())
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the daemon went away while we warmed up (SIGTERM right after boot, say)
    return _fork_loop(sock)


# -- the daemon's end ----------------------------------------------------------------------------


class ZygoteError(Exception):
    """The zygote is not there or failed a request (the caller falls back to the binary)."""


def _write_bundle_files(bundle: str, *, pid: int = 0, address: str = "", socket_dir: str = "") -> None:
    """What ``start`` leaves in the bundle besides the socket: ``shim.pid``, ``address``, the
    ``s`` link to the socket directory (those given). A bundle that went away meanwhile (a
    failed create) is left alone."""
    from arun.shim import manager

    if pid:
        with contextlib.suppress(OSError):
            manager.write_atomic(os.path.join(bundle, "shim.pid"), str(pid))
    if address:
        with contextlib.suppress(OSError):
            manager.write_atomic(os.path.join(bundle, "address"), address)
    if socket_dir:
        with contextlib.suppress(OSError):
            manager.link_socket_dir(bundle, socket_dir)


class _Spare:
    """A pre-forked shim the daemon holds: already detached (forked through an intermediate
    that exited, so re-parented; a session of its own), it turns into a shim the moment it
    receives its listener, so a start costs a message, not a fork."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock

    def alive(self) -> bool:
        """Still waiting (a spare that died closed its end of the socket)."""
        return _peer_open(self.sock)


def _peer_open(sock: socket.socket) -> bool:
    """The process at the other end of ``sock`` still holds it (end-of-file once it is gone;
    a message waiting to be read counts as open)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return True
    except OSError:
        return False


class Zygote:
    """The daemon's handle on its zygote: the warm process it forks spares from, and the spares.

    A start is handled here, in the daemon: the shim's address, its bound listener (or the live
    shim of its pod), a spare told its task with the listener, the bundle's files. The warm
    process only forks; pages it writes would stop being shared with the spares it forks next."""

    def __init__(self, python: str = sys.executable, env: Mapping[str, str] | None = None) -> None:
        import asyncio

        self.python = python
        self.env = dict(os.environ if env is None else env)
        from arun.runtime import ksm

        # The environment the spares inherit: the zygote's own (which pops the KSM request).
        self._spare_env = {k: v for k, v in self.env.items() if k != ksm.ENV}
        self.want = max(1, int(self.env.get("ARUN_ZYGOTE_SPARES", SPARES)))
        self.pid = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock: asyncio.Lock | None = None  # one start at a time
        self._fork_lock: asyncio.Lock | None = None  # one exchange with the zygote at a time
        self._spares: list[_Spare] = []
        self._replenisher: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()  # starts waiting for their spare
        self._used_up = asyncio.Event()  # set when a start takes the last spare
        self._last_start = 0.0
        self._ready = False
        self._ready_for_forks = True
        # How long the last start took in the daemon (microseconds).
        self.last_micros = 0

    @property
    def ready(self) -> bool:
        return self._ready and self._sock is not None

    async def start(self, timeout: float = READY_TIMEOUT) -> None:  # noqa: ASYNC109
        """Start the zygote, wait until it has imported the shim, and fork the first spares."""
        import asyncio
        import subprocess

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Python's subprocess, not the loop's: uvloop would leak descriptors into it.
            self._proc = subprocess.Popen(  # noqa: ASYNC220 - a vfork and exec, no waiting
                [self.python, *python_flags(self.env), "-m", "arun.runtime.zygote", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._lock, self._fork_lock = asyncio.Lock(), asyncio.Lock()
        try:
            async with asyncio.timeout(timeout):
                data = await asyncio.get_running_loop().sock_recv(ours, MAX_MESSAGE)
                hello = json.loads(data) if data else {}
                if "ready" not in hello:
                    raise ZygoteError("the zygote exited before it was ready")
                self.pid = int(hello["ready"])
                await self._replenish()
        except BaseException:
            await self.close()
            raise
        self._ready = True
        log.info("shim zygote ready", extra={"pid": self.pid})

    async def spawn(
        self,
        *,
        namespace: str,
        id: str,
        bundle: str,
        grpc_address: str,
        ttrpc_address: str,
        socket_dir: str,
        debug: bool = False,
        options: bytes = b"",
        timeout: float = REQUEST_TIMEOUT,  # noqa: ASYNC109
    ) -> tuple[bytes, int]:
        """Start (or find) the shim of task ``id`` as ``start`` would, given a
        ``BootstrapParams`` with these fields (``options``: a serialized Any, the runtime
        options); what ``start`` would print, and the new shim's pid (0 when the live shim
        of the task's pod was reused)."""
        import asyncio

        from arun.shim import manager, wire

        if not self.ready or self._lock is None:
            raise ZygoteError("the zygote is not running")
        async with self._lock:
            if not self._zygote_alive():
                await self._fail("the zygote exited")
                raise ZygoteError("the zygote exited")
            started = time.monotonic()
            socket_dir = socket_dir or manager.DEFAULT_SOCKET_DIR
            try:
                address, path = manager.shim_socket(namespace, id, bundle, grpc_address, socket_dir)
                runc = None
                if options:
                    runc = wire.RuncOptions.from_any(wire.AnyMessage.decode(options))
                p = manager.StartParams(
                    namespace=namespace,
                    id=id,
                    grpc_address=grpc_address,
                    ttrpc_address=ttrpc_address,
                    socket_dir=socket_dir,
                    debug=debug,
                    runc=runc,
                    bootstrap=True,
                )
                listener = manager.listen(path)
            except (manager.UsageError, ValueError, OSError) as exc:
                raise ZygoteError(f"{type(exc).__name__}: {exc}") from exc
            spare = None
            if listener is not None:
                environment = manager.server_environment(p, dict(self._spare_env))
                activation = {"namespace": namespace, "id": id, "bundle": bundle, "debug": debug}
                activation.update(self._environment_changes(environment))
                payload = json.dumps(activation).encode()
                try:
                    async with asyncio.timeout(timeout):
                        spare = await self._hand_over(payload, listener)
                except BaseException as exc:
                    listener.close()
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    if not self._zygote_alive() or isinstance(exc, (OSError, TimeoutError)):
                        await self._fail(f"zygote request failed: {exc!r}")
                        if isinstance(exc, Exception) and not isinstance(exc, ZygoteError):
                            raise ZygoteError(str(exc) or type(exc).__name__) from exc
                    raise
            # The reply does not wait for the spare's acknowledgement, nor for the bundle's
            # files: the daemon connects meanwhile (the connection queues on the bound socket).
            task = asyncio.get_running_loop().create_task(
                self._finish(spare, payload if spare else b"", listener, path, bundle, address, socket_dir),
                name="shim-zygote-finish",
            )
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
            self.last_micros = int((time.monotonic() - started) * 1e6)
            return wire.bootstrap_result(address, 3), spare.pid if spare else 0

    def _environment_changes(self, env: dict[str, str]) -> dict[str, Any]:
        """``env`` as changes to the environment a spare inherited: a few ``putenv``s in the
        spare, not a rebuilt ``os.environ`` (which would copy far more of the shared heap)."""
        current = self._spare_env
        return {
            "set": {k: v for k, v in env.items() if current.get(k) != v},
            "unset": [k for k in current if k not in env],
        }

    async def _hand_over(self, payload: bytes, listener: Any) -> _Spare:
        """Give ``listener`` and the shim's parameters to a spare (to another one, should the
        first have died): the spare it went to."""
        for _ in range(3):
            spare = await self._take_spare()
            with contextlib.suppress(OSError):
                # A spare waits under SCHED_IDLE; a shim runs under the normal policy.
                os.sched_setscheduler(spare.pid, os.SCHED_OTHER, os.sched_param(0))
            try:
                socket.send_fds(spare.sock, [payload], [listener.fileno()])
            except OSError:
                spare.sock.close()  # gone meanwhile
                continue
            return spare
        raise ZygoteError("no spare shim could be started")

    async def _finish(
        self,
        spare: _Spare | None,
        payload: bytes,
        listener: Any,
        path: str,
        bundle: str,
        address: str,
        socket_dir: str,
    ) -> None:
        """After the reply: wait until the spare holds the listener (it acknowledges; one that
        died first is replaced by another), then write the bundle's files. A spare that does not
        acknowledge is killed: it would become a shim nobody can reach."""
        try:
            tries = 1
            while spare is not None:
                acknowledged = False
                try:
                    acknowledged = await self._acknowledged(spare)
                finally:
                    spare.sock.close()
                    if not acknowledged:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(spare.pid, signal.SIGKILL)
                if acknowledged:
                    _write_bundle_files(bundle, pid=spare.pid)
                    break
                if tries == 3:
                    raise ZygoteError("no spare shim acknowledged its task")
                tries += 1
                spare = await self._hand_over(payload, listener)
        except Exception as exc:
            log.warning("shim zygote: starting a shim failed", extra={"bundle": bundle, "error": str(exc)})
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            if listener is not None:
                listener.close()
        _write_bundle_files(bundle, address=address, socket_dir=socket_dir)

    @staticmethod
    async def _acknowledged(spare: _Spare) -> bool:
        import asyncio

        try:
            async with asyncio.timeout(ACK_TIMEOUT):
                return await asyncio.get_running_loop().sock_recv(spare.sock, 8) == b"ok"
        except (OSError, TimeoutError):
            return False

    async def _take_spare(self) -> _Spare:
        """A waiting spare (the first one alive), or a new one when none is left; the spares
        used up are forked again once starts have paused (:meth:`_replenish_later`)."""
        import asyncio

        self._last_start = time.monotonic()
        if self._replenisher is None or self._replenisher.done():
            self._replenisher = asyncio.get_running_loop().create_task(
                self._replenish_later(), name="shim-zygote-replenish"
            )
        while self._spares:
            spare = self._spares.pop(0)
            if not self._spares:
                self._used_up.set()
            if spare.alive():
                return spare
            spare.sock.close()
        return await self._fork_spare()

    async def _replenish_later(self) -> None:
        """Fork the spares used up, but not while the shim just started is coming up: a fork
        (and a new spare setting itself up) takes CPU the new shim and its ``runc create`` need
        right now. With a spare left, wait until starts have paused for REPLENISH_DELAY; with
        none left, at once."""
        import asyncio

        while self._spares:
            quiet = self._last_start + REPLENISH_DELAY - time.monotonic()
            if quiet <= 0:
                break
            self._used_up.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(quiet):
                    await self._used_up.wait()
        try:
            await self._replenish()
        except (OSError, ZygoteError) as exc:
            log.warning("shim zygote could not fork spares", extra={"error": str(exc)})

    async def _replenish(self) -> None:
        for spare in [s for s in self._spares if not s.alive()]:
            spare.sock.close()
            self._spares.remove(spare)
        while len(self._spares) < self.want and self._sock is not None:
            self._spares.append(await self._fork_spare())

    async def _fork_spare(self) -> _Spare:
        """Ask the zygote for a new spare: a byte out; its pid and its socket back (``-``: the
        fork failed; end-of-file: the zygote is gone)."""
        import asyncio

        from arun.asyncutil import readable

        sock, lock = self._sock, self._fork_lock
        if sock is None or lock is None or not self._ready_for_forks:
            raise ZygoteError("the zygote is not running")
        async with lock:
            try:
                sock.send(b"f")
                while True:
                    try:
                        msg, fds, _, _ = socket.recv_fds(sock, 64, 1)
                        break
                    except BlockingIOError:
                        await readable(sock.fileno())
            except asyncio.CancelledError:
                # Its reply, still coming, would answer the next request: no more requests.
                self._ready_for_forks = False
                raise
            except OSError as exc:
                self._ready_for_forks = False
                raise ZygoteError(f"the zygote is gone: {exc}") from exc
        if not msg:
            self._ready_for_forks = False
            raise ZygoteError("the zygote exited")
        if not fds:
            raise ZygoteError("the zygote could not fork a spare")
        spare = _Spare(int(msg), socket.socket(fileno=fds[0]))
        spare.sock.setblocking(False)
        # Until it gets a task, a spare (setting itself up, waiting) runs only on a CPU nothing
        # else wants; :meth:`_launch` puts it back under SCHED_OTHER. Only when that is sure to
        # be allowed (root): a shim left under SCHED_IDLE would crawl on a busy host.
        if os.geteuid() == 0:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(spare.pid, os.SCHED_IDLE, os.sched_param(0))
        return spare

    def _zygote_alive(self) -> bool:
        """The zygote still runs and can take requests. Its end of the socket reads as open while
        a reply it sent before dying waits there, so the process itself is asked too."""
        sock, proc = self._sock, self._proc
        return (
            sock is not None
            and self._ready_for_forks
            and _peer_open(sock)
            and (proc is None or proc.poll() is None)
        )

    async def _fail(self, why: str) -> None:
        proc = self._proc
        await self.close()
        # Negative: the signal that ended it (a zygote dies without a word only when killed).
        status = proc.returncode if proc is not None else None
        log.warning(
            "shim zygote unusable, shims start from the binary",
            extra={"reason": why, "exit_status": status},
        )

    async def close(self) -> None:
        import asyncio

        self._ready = False
        task, self._replenisher = self._replenisher, None
        tasks = [t for t in (task, *self._finishing) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)  # their end, without taking on their cancellation
        for spare in self._spares:
            spare.sock.close()  # end-of-file: the spare exits
        self._spares.clear()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # end-of-file: the zygote exits
        proc, self._proc = self._proc, None
        if proc is not None:
            import subprocess

            try:
                await asyncio.to_thread(proc.wait, 2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.to_thread(proc.wait)


if __name__ == "__main__":
    sys.exit(main())
