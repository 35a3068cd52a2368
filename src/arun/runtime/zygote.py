"""The zygote: a pre-imported template process that forks arun shims.

A fresh Python costs ~150 ms and ~20 MB to start; a fork of a process that has
already imported the shim costs a few milliseconds, and its pages stay shared
copy-on-write with every other shim forked from it (``gc.freeze()`` keeps the
collector from writing to, and so un-sharing, the imported objects).

The daemon starts the zygote as ``python -m arun.runtime.zygote <fd>`` with one end
of a ``SOCK_SEQPACKET`` socketpair as ``<fd>``. The zygote stays single-threaded,
never runs an event loop, and answers one request at a time: a request carries what
the shim binary's ``start`` command would get — its flags, the bytes on its stdin
(the ``BootstrapParams``), its environment and working directory (the bundle) — and
the reply carries what ``start`` would print, so the two ways are the same from the
outside: the same socket path (grouping by the sandbox annotation included, a live
shim of the pod is reused), the same files in the bundle (``shim.pid``, ``address``,
the ``s`` link), the same ``BootstrapResult``.

A new shim is forked twice: the child forks the shim and exits at once, so the
shim is re-parented (to init or the nearest subreaper) and is never a child of the
zygote or of the daemon; ``serve`` makes it a session leader, closes every
inherited descriptor but its listener, and runs its own event loop.

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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    import subprocess

# asyncio is imported where the daemon's end uses it: in the zygote process, the shim's
# ``preload`` must import it first (without ``ssl``, which the shim never needs).

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 20
READY_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0


# -- the zygote process --------------------------------------------------------------------------


def _write_atomic(path: str, data: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _fork_shim(params: Any, listener_fd: int, env: dict[str, str], bundle: str) -> int:
    """Fork the shim server (detached, via an intermediate child); its pid."""
    from arun.shim import server

    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the intermediate
        code = 1
        try:
            os.close(r)
            shim = os.fork()
            if shim == 0:  # the shim
                code = 1
                try:
                    os.close(w)
                    os.environ.clear()
                    os.environ.update(env)
                    serve_params = server.ServeParams.from_environment(
                        params.namespace, params.id, bundle, params.debug, env
                    )
                    code = server.serve(serve_params, listener_fd)
                finally:
                    os._exit(code)
            os.write(w, str(shim).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        _, status = os.waitpid(child, 0)
        with os.fdopen(r, "rb") as fh:
            raw = fh.read()
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(r)
        raise
    if os.waitstatus_to_exitcode(status) != 0 or not raw:
        raise RuntimeError(f"forking the shim failed (intermediate status {status})")
    return int(raw)


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Do what ``containerd-shim-arun-v1 <flags> start`` does, forking instead of exec'ing."""
    from arun.shim import manager, wire

    argv: list[str] = list(request["argv"])
    stdin = base64.b64decode(request.get("stdin", ""))
    env: dict[str, str] = dict(request["env"])
    bundle: str = request["bundle"]
    started = time.monotonic()
    flags = manager.parse_flags(argv)
    p = manager.start_params(flags, stdin, env)
    if not p.namespace:
        raise manager.UsageError("shim namespace cannot be empty")
    if not p.id:
        raise manager.UsageError("shim id cannot be empty")
    group = manager.group_key(bundle, p.id)
    address = manager.socket_address(p.grpc_address, p.namespace, group, p.socket_dir)
    path = manager.socket_path(address)
    if len(path.encode()) > 107:
        raise manager.UsageError(f"socket path {path!r} is longer than a unix socket address allows")
    if p.bootstrap and p.socket_dir:
        link = os.path.join(bundle, "s")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(p.socket_dir, link)
    listener = manager.listen(path)
    pid = 0
    if listener is not None:
        try:
            pid = _fork_shim(p, listener.fileno(), manager.server_environment(p, env), bundle)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        finally:
            listener.close()
        _write_atomic(os.path.join(bundle, "shim.pid"), str(pid))
    _write_atomic(os.path.join(bundle, "address"), address)
    if p.bootstrap:
        out = wire.bootstrap_result(address, 3)
    else:
        out = json.dumps({"version": 2, "address": address, "protocol": "ttrpc"}).encode()
    return {
        "output": base64.b64encode(out).decode(),
        "pid": pid,
        "micros": int((time.monotonic() - started) * 1e6),
    }


def serve_requests(sock: socket.socket) -> None:
    while True:
        try:
            data = sock.recv(MAX_MESSAGE)
        except InterruptedError:
            continue
        if not data:
            return  # the daemon is gone
        try:
            reply = handle(json.loads(data))
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sock.sendall(json.dumps(reply).encode())


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit():
        sys.stderr.write("usage: python -m arun.runtime.zygote <socket fd>\n")
        return 2
    sock = socket.socket(fileno=int(args[0]))
    sock.setblocking(True)
    from arun.shim import server

    server.preload()
    import arun.shim.manager
    import arun.shim.wire  # noqa: F401

    sock.sendall(json.dumps({"ready": os.getpid()}).encode())
    serve_requests(sock)
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
        argv: Sequence[str],
        stdin: bytes,
        env: Mapping[str, str],
        bundle: str,
        *,
        timeout: float = REQUEST_TIMEOUT,  # noqa: ASYNC109
    ) -> tuple[bytes, int]:
        """What ``start`` would print, and the new shim's pid (0 when a live shim was reused)."""
        import asyncio

        message = {"argv": list(argv), "stdin": base64.b64encode(stdin).decode(), "env": dict(env)}
        message["bundle"] = bundle
        request = json.dumps(message).encode()
        if len(request) > MAX_MESSAGE:
            raise ZygoteError("zygote request too large")
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
        return base64.b64decode(reply["output"]), int(reply.get("pid", 0))

    async def _fail(self, why: str) -> None:
        log.warning("shim zygote unusable, shims start from the binary", extra={"reason": why})
        await self.close()

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
