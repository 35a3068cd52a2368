"""The zygote: a pre-imported template process that forks arun shims.

A fresh Python costs ~150 ms and ~20 MB to start; a fork of a process that has
already imported the shim costs a few milliseconds, and its pages stay shared
copy-on-write with every other shim forked from it (``gc.freeze()`` keeps the
collector from writing to, and so un-sharing, the imported objects).

The daemon starts the zygote as ``python -m arun.runtime.zygote <fd>`` with one end
of a ``SOCK_SEQPACKET`` socketpair as ``<fd>``. The zygote stays single-threaded,
never runs an event loop, and answers one request at a time. A request carries what
the shim's ``start`` command would read from a ``BootstrapParams`` on its stdin (the
task's namespace and id, the daemon's addresses, the socket directory, the runtime
options) and its bundle; the reply is what ``start`` would print. The two ways are the
same from the outside: the same socket path (grouping by the sandbox annotation
included: a live shim of the pod is reused), the same files in the bundle
(``shim.pid``, ``address``, the ``s`` link), the same ``BootstrapResult``.

Shims are forked ahead of time: the zygote keeps a few *spares*, each forked
through an intermediate child that exits at once (so the spare is re-parented to
init or the nearest subreaper, never a child of the zygote or of the daemon) and in
a session of its own, waiting on a socketpair with its event loop, reaper and ttrpc
server already running (``arun.shim.server.serve_prepared``). A start binds the shim's
socket and hands it to a spare (``SCM_RIGHTS``) with its parameters; the spare becomes
the shim of that task (its stdio, log and task service), and the zygote forks
replacements once the daemon has been quiet for ``REPLENISH_DELAY`` (at once when no
spare is left), so that the fork does not compete with the shim just started.

When the daemon goes away the zygote reads end-of-file and exits; the shims it
forked live on.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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


# -- the zygote process --------------------------------------------------------------------------


def _write_atomic(path: str, data: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


class _Spare:
    """A pre-forked shim waiting for its parameters: already detached (forked through an
    intermediate that exited, so re-parented; a session of its own), it turns into a shim the
    moment it receives its listener, so a start costs a message, not a fork."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock

    def alive(self) -> bool:
        """Still waiting (a spare that died closed its end of the socket)."""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return True
        except OSError:
            return False


class Zygote_:
    """The zygote process's state: its spares and the template that forks them."""

    def __init__(self, spares: int, template: bool = True) -> None:
        self.want = max(1, spares)
        self.spares: list[_Spare] = []
        self.use_template = template
        self.template = _Template.fork() if template else None

    def fork_spare(self) -> _Spare:
        """A new spare: forked by the template (its pages are the ones every shim shares), by the
        zygote itself when the template is gone (and a new template is forked for next time)."""
        if self.template is not None:
            try:
                return self.template.fork_spare()
            except OSError:
                self.template.close(kill=True)
                self.template = None
        pid, sock = _fork_detached()
        if self.use_template:
            self.template = _Template.fork()
        return _Spare(pid, sock)

    def take_spare(self) -> _Spare:
        while self.spares:
            spare = self.spares.pop(0)
            if spare.alive():
                return spare
            spare.sock.close()
        return self.fork_spare()

    def replenish(self) -> None:
        self.reap()
        while len(self.spares) < self.want:
            spare = self.fork_spare()
            # Until it gets a task, a spare (setting itself up, waiting) runs only on
            # a CPU nothing else wants; ``send`` puts it back under SCHED_OTHER. Only when that
            # is sure to be allowed (root): a shim left under SCHED_IDLE would crawl on a busy host.
            if os.geteuid() == 0:
                with contextlib.suppress(OSError):
                    os.sched_setscheduler(spare.pid, os.SCHED_IDLE, os.sched_param(0))
            self.spares.append(spare)

    def reap(self) -> None:
        """Forget a template that died (the next spare comes from the zygote and a new one)."""
        if self.template is not None and not self.template.alive():
            self.template.sock.close()
            self.template = None

    def launch(self, spare: _Spare, activation: dict[str, Any], listener_fd: int, sent: bool = False) -> int:
        """Hand ``listener_fd`` and the shim's parameters to ``spare`` (to another one, should
        it have died); the shim's pid. ``sent``: :meth:`send` already gave them to ``spare``."""
        payload = json.dumps(activation).encode()
        for _ in range(3):
            if not sent:
                sent = self.send(spare, payload, listener_fd)
            # The spare acknowledges once it holds the listener: a spare that died after we
            # picked it must not take the socket with it.
            ok = sent and self.confirmed(spare)
            spare.sock.close()
            if ok:
                return spare.pid
            spare, sent = self.take_spare(), False  # that one is gone (killed): another
        raise RuntimeError("no spare shim could be started")

    @staticmethod
    def send(spare: _Spare, payload: bytes, listener_fd: int) -> bool:
        """Give ``spare`` its parameters and listener (it acknowledges: :meth:`confirmed`),
        under the normal scheduling policy again (a spare warms up under ``SCHED_IDLE``)."""
        with contextlib.suppress(OSError):
            os.sched_setscheduler(spare.pid, os.SCHED_OTHER, os.sched_param(0))
        try:
            socket.send_fds(spare.sock, [payload], [listener_fd])
        except OSError:
            return False
        return True

    @staticmethod
    def confirmed(spare: _Spare) -> bool:
        try:
            spare.sock.settimeout(ACK_TIMEOUT)
            return spare.sock.recv(8) == b"ok"
        except OSError:
            return False

    def close(self) -> None:
        for spare in self.spares:
            spare.sock.close()  # end-of-file: the spare exits
        self.spares.clear()
        if self.template is not None:
            self.template.close()
            self.template = None


def _fork_detached() -> tuple[int, socket.socket]:
    """Fork a spare through an intermediate that exits at once (the spare is re-parented, in a
    session of its own): its pid and the zygote's end of its socket."""
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


class _Template:
    """The process spares are forked from: a child of the zygote, forked right after the
    imports, the rehearsal and ``gc.freeze()``, that does nothing but fork spares.

    A page a process writes after a fork stops being shared with the children forked before.
    The zygote itself runs code for every request (decoding it, finding the socket, writing
    the bundle's files), so the spares it forked one after another would each keep copies
    of the pages it touched in between; the template's loop touches a handful."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock

    @classmethod
    def fork(cls) -> _Template | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            code = 1
            try:
                fd = theirs.fileno()
                os.closerange(3, fd)  # not the daemon's socket, not the spares' sockets
                os.closerange(fd + 1, 1 << 16)
                code = _template_main(theirs)
            finally:
                os._exit(code)
        theirs.close()
        return cls(pid, ours)

    def fork_spare(self) -> _Spare:
        self.sock.settimeout(ACK_TIMEOUT)
        self.sock.sendall(b"f")
        msg, fds, _, _ = socket.recv_fds(self.sock, 64, 1)
        if not msg or not fds:
            for fd in fds:
                os.close(fd)
            raise OSError("the zygote's template could not fork a spare")
        return _Spare(int(msg), socket.socket(fileno=fds[0]))

    def alive(self) -> bool:
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return not done

    def close(self, kill: bool = False) -> None:
        self.sock.close()  # end-of-file: the template exits
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _template_main(sock: socket.socket) -> int:
    """The template's loop: a byte in, a spare out (its pid, and the zygote's end of its socket);
    end-of-file: exit."""
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
            send_fds(sock, [b""], [])
            continue
        send_fds(sock, [str(pid).encode()], [ours.fileno()])
        ours.close()


def _spare_main(sock: socket.socket) -> int:
    """Life of a spare: be a shim-in-waiting (its event loop, reaper and server already up,
    ``server.serve_prepared``) until the zygote's go, then serve that task."""
    os.setsid()
    fd = sock.fileno()
    # Nothing of the zygote's: not its socket to the daemon, not the other spares' sockets.
    os.closerange(3, fd)
    os.closerange(fd + 1, 1 << 16)
    from arun.shim import server

    async def activation() -> tuple[server.ServeParams, int] | None:
        import asyncio

        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, on_readable)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
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
    ``python -m arun.runtime.zygote N``, so what does not fit is cut off). Through ``/proc``
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


def handle(state: Zygote_, request: dict[str, Any]) -> tuple[dict[str, Any], Callable[[], None]]:
    """Do what ``containerd-shim-arun-v1 … start`` does with a ``BootstrapParams``, with a spare
    instead of an exec: the reply, and what is left to do once it has been sent.

    Finding the address, binding the socket and handing it to a spare come before the reply
    (connections queue on a bound socket until the shim accepts them); waiting for the spare's
    acknowledgement and writing the bundle files come after it."""
    from arun.shim import manager, wire

    started = time.monotonic()
    namespace: str = request["namespace"]
    id: str = request["id"]
    bundle: str = request["bundle"]
    socket_dir: str = request.get("socket_dir") or manager.DEFAULT_SOCKET_DIR
    if not namespace:
        raise manager.UsageError("shim namespace cannot be empty")
    if not id:
        raise manager.UsageError("shim id cannot be empty")
    group = manager.group_key(bundle, id)
    address = manager.socket_address(request["grpc_address"], namespace, group, socket_dir)
    path = manager.socket_path(address)
    if len(path.encode()) > 107:
        raise manager.UsageError(f"socket path {path!r} is longer than a unix socket address allows")
    listener = manager.listen(path)
    spare = None
    if listener is not None:
        try:
            spare = state.take_spare()
        except BaseException:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
    activation: dict[str, Any] = {}
    sent = False
    if listener is not None and spare is not None:
        # The spare gets its task before the daemon gets the reply: the shim's coming up is
        # what a Create waits for, while the daemon only connects meanwhile (the connection
        # queues on the bound socket). Its acknowledgement is awaited after the reply.
        try:
            activation = _activation(request, namespace, id, bundle, socket_dir)
            sent = state.send(spare, json.dumps(activation).encode(), listener.fileno())
        except BaseException:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if not sent:
                state.spares.insert(0, spare)  # untouched: it serves the next request
            raise
    reply = {
        "output": base64.b64encode(wire.bootstrap_result(address, 3)).decode(),
        "pid": spare.pid if spare is not None else 0,
        "micros": int((time.monotonic() - started) * 1e6),
    }

    def after() -> None:
        if listener is not None and spare is not None:
            try:
                pid = state.launch(spare, activation, listener.fileno(), sent=sent)
            finally:
                listener.close()
            _write_files([(os.path.join(bundle, "shim.pid"), str(pid))])
        files = [(os.path.join(bundle, "address"), address)]
        if socket_dir:
            files.append((os.path.join(bundle, "s"), "->" + socket_dir))
        _write_files(files)

    return reply, after


def _activation(
    request: dict[str, Any], namespace: str, id: str, bundle: str, socket_dir: str
) -> dict[str, Any]:
    """What a spare is told to become the shim of a task: the task and the changes to its
    environment (the one ``start`` would give the shim it launches)."""
    from arun.shim import manager, wire

    runc = None
    if request.get("options"):
        any_ = wire.AnyMessage.decode(base64.b64decode(request["options"]))
        runc = wire.RuncOptions.from_any(any_)
    p = manager.StartParams(
        namespace=namespace,
        id=id,
        grpc_address=request["grpc_address"],
        ttrpc_address=request["ttrpc_address"],
        socket_dir=socket_dir,
        debug=bool(request.get("debug")),
        runc=runc,
        bootstrap=True,
    )
    activation: dict[str, Any] = {"namespace": namespace, "id": id, "bundle": bundle, "debug": p.debug}
    activation.update(_environment_changes(manager.server_environment(p, dict(os.environ))))
    return activation


def _environment_changes(env: dict[str, str]) -> dict[str, Any]:
    """``env`` as changes to the zygote's own environment (which a spare inherited)."""
    current = os.environ
    return {
        "set": {k: v for k, v in env.items() if current.get(k) != v},
        "unset": [k for k in current if k not in env],
    }


def _write_files(files: list[tuple[str, str]]) -> None:
    """What ``start`` leaves in the bundle besides the socket (``shim.pid``, ``address``, the
    ``s`` link to the socket directory); written after the reply, off the critical path."""
    for path, data in files:
        try:
            if data.startswith("->"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                os.symlink(data[2:], path)
            else:
                _write_atomic(path, data)
        except OSError:
            pass  # the bundle went away meanwhile (a failed create)


def _replenish_when_idle(sock: socket.socket, state: Zygote_) -> None:
    """Fork the spares used up, but not while the shim just started is coming up: forking (and
    a new spare setting itself up) takes CPU the new shim and its ``runc create`` need right now.
    With a spare left, wait until the daemon has been quiet for REPLENISH_DELAY (or sends the
    next request, which that spare serves); with none left, replenish at once."""
    if state.spares and REPLENISH_DELAY > 0:
        import select

        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select([sock], [], [], REPLENISH_DELAY)
            if readable:
                return  # the next request first; replenished after it
    state.replenish()


def serve_requests(sock: socket.socket, state: Zygote_) -> None:
    try:
        while True:
            try:
                data = sock.recv(MAX_MESSAGE)
            except InterruptedError:
                continue
            if not data:
                return  # the daemon is gone
            after: Callable[[], None] | None = None
            try:
                reply, after = handle(state, json.loads(data))
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            sock.sendall(json.dumps(reply).encode())
            # Off the critical path: the shim itself, the bundle files, the next spare.
            if after is not None:
                try:
                    after()
                except Exception as exc:
                    sys.stderr.write(f"arun zygote: starting a shim failed: {exc!r}\n")
            _replenish_when_idle(sock, state)
    finally:
        state.close()


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
    import tempfile

    holes: dict[int, int] = {}
    debugmallocstats = getattr(sys, "_debugmallocstats", None)
    if debugmallocstats is None:
        return holes
    with tempfile.TemporaryFile() as tmp:
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
    if os.environ.get("ARUN_ZYGOTE_REHEARSAL", "1") != "0":
        server.rehearse()
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

    state = Zygote_(
        int(os.environ.get("ARUN_ZYGOTE_SPARES", SPARES)),
        template=os.environ.get("ARUN_ZYGOTE_TEMPLATE", "1") != "0",
    )
    state.replenish()
    try:
        sock.sendall(json.dumps({"ready": os.getpid()}).encode())
    except (BrokenPipeError, ConnectionResetError):
        # The daemon went away while we warmed up (e.g. SIGTERM right after boot): as on EOF
        # in serve_requests, let the spares go and leave quietly.
        state.close()
        return 0
    serve_requests(sock, state)
    return 0


# -- the daemon's end ----------------------------------------------------------------------------


class ZygoteError(Exception):
    """The zygote is not there or failed a request (the caller falls back to the binary)."""


class Zygote:
    """The daemon's handle on its zygote process."""

    def __init__(self, python: str = sys.executable, env: Mapping[str, str] | None = None) -> None:
        self.python = python
        self.env = dict(os.environ if env is None else env)
        self.pid = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock: asyncio.Lock | None = None
        self._ready = False
        # How long the zygote itself took for the last start (microseconds).
        self.last_micros = 0

    @property
    def ready(self) -> bool:
        return self._ready and self._sock is not None

    async def start(self, timeout: float = READY_TIMEOUT) -> None:  # noqa: ASYNC109
        """Start the zygote and wait until it has imported the shim."""
        import asyncio
        import subprocess

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Python's subprocess, not the loop's: uvloop would leak descriptors into it.
            self._proc = subprocess.Popen(  # noqa: ASYNC220 - a vfork and exec, no waiting
                [self.python, "-m", "arun.runtime.zygote", str(theirs.fileno())],
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
        try:
            async with asyncio.timeout(timeout):
                data = await asyncio.get_running_loop().sock_recv(ours, MAX_MESSAGE)
            hello = json.loads(data) if data else {}
            if "ready" not in hello:
                raise ZygoteError("the zygote exited before it was ready")
            self.pid = int(hello["ready"])
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

        message = {
            "namespace": namespace,
            "id": id,
            "bundle": bundle,
            "grpc_address": grpc_address,
            "ttrpc_address": ttrpc_address,
            "socket_dir": socket_dir,
            "debug": debug,
            "options": base64.b64encode(options).decode() if options else "",
        }
        request = json.dumps(message).encode()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            sock = self._sock
            if sock is None or not self._ready:
                raise ZygoteError("the zygote is not running")
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(timeout):
                    await loop.sock_sendall(sock, request)
                    data = await loop.sock_recv(sock, MAX_MESSAGE)
            except (OSError, TimeoutError) as exc:
                await self._fail(f"zygote request failed: {exc!r}")
                raise ZygoteError(str(exc) or type(exc).__name__) from exc
            except asyncio.CancelledError:
                # A reply may still come: it would answer the next request. Start over.
                await self._fail("zygote request cancelled")
                raise
            if not data:
                await self._fail("the zygote exited")
                raise ZygoteError("the zygote exited")
        reply = json.loads(data)
        if "error" in reply:
            raise ZygoteError(str(reply["error"]))
        self.last_micros = int(reply.get("micros", 0))
        return base64.b64decode(reply["output"]), int(reply.get("pid", 0))

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
