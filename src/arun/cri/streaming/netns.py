"""Port-forward into a pod: a TCP connection to localhost inside the pod's network namespace.

A socket belongs to the network namespace it was created in, and ``setns`` with
``CLONE_NEWNET`` moves only the calling thread. So a short-lived thread of its
own joins the namespace, creates the socket and exits; the socket is then
connected and used from the event loop like any other. The thread is never a
pooled one (a pool thread left in a pod's namespace would taint later work), and
it never returns to the daemon's namespace because it simply ends.

Like containerd, IPv4 (127.0.0.1) is tried first and IPv6 (::1) second, one
after the other: a Happy-Eyeballs race would need both sockets made in the
namespace up front.

:func:`port_forward` then copies in both directions with half-close: the
client's end of input becomes ``shutdown(SHUT_WR)`` toward the pod, and the
pod's EOF closes the stream toward the client; it returns once both directions
are done, and raises if either fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import socket
import threading

from arun import errdefs
from arun.cri.streaming.runtime import DuplexStream

CLONE_NEWNET = 0x40000000
_CHUNK = 64 << 10


def _setns(fd: int, nstype: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, nstype)
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


async def socket_in_netns(
    netns_path: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    """A new non-blocking socket that lives in the network namespace at ``netns_path``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def worker() -> None:
        # This thread joins the namespace and then ends; nothing else ever runs on it.
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            sock = socket.socket(family, kind)
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, sock, None)

    threading.Thread(target=worker, name="arun-netns", daemon=True).start()
    sock = await done
    sock.setblocking(False)
    return sock


def _settle(
    fut: asyncio.Future[socket.socket], sock: socket.socket | None, exc: BaseException | None
) -> None:
    if fut.cancelled():
        if sock is not None:
            sock.close()
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        assert sock is not None
        fut.set_result(sock)


async def connect_localhost(netns_path: str | None, port: int) -> socket.socket:
    """A TCP connection to ``port`` on localhost in the namespace (ours if ``netns_path`` is None)."""
    if not 1 <= port <= 0xFFFF:
        raise errdefs.InvalidArgumentError(f"invalid port {port}")
    loop = asyncio.get_running_loop()
    failures: list[str] = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        if netns_path is None:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
        else:
            try:
                sock = await socket_in_netns(netns_path, family)
            except FileNotFoundError as exc:
                raise errdefs.NotFoundError(f"network namespace {netns_path!r} does not exist") from exc
        try:
            await loop.sock_connect(sock, (host, port))
        except OSError as exc:
            sock.close()
            failures.append(f"{'IPv4' if family == socket.AF_INET else 'IPv6'}: {exc.strerror or exc}")
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    where = f"inside namespace {netns_path!r}" if netns_path else "in the host network"
    raise ConnectionRefusedError(f"failed to connect to localhost:{port} {where}, {', '.join(failures)}")


async def port_forward(netns_path: str | None, port: int, stream: DuplexStream) -> None:
    """Forward ``stream`` to ``port`` on localhost in the namespace, until both directions end."""
    sock = await connect_localhost(netns_path, port)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:

        async def pod_to_client() -> None:
            while data := await reader.read(_CHUNK):
                await stream.write(data)
            await stream.close()

        async def client_to_pod() -> None:
            while data := await stream.read(_CHUNK):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()

        async with asyncio.TaskGroup() as group:
            group.create_task(pod_to_client())
            group.create_task(client_to_pod())
    except BaseExceptionGroup as group_error:
        # one direction's failure is the forward's failure; report the first
        first = group_error.exceptions[0]
        raise first from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await writer.wait_closed()
