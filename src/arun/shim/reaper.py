"""The one place in the shim that waits for children.

The shim is a child subreaper: container processes whose parent (``runc``) exits are re-parented
to it, so it must reap them or they stay zombies. Anything else that waits — asyncio's child
watcher, ``Popen.wait``, ``subprocess._cleanup`` polling forgotten ``Popen`` objects — would steal
exit statuses, so nothing else does. On SIGCHLD the reaper loops ``wait4(-1, WNOHANG)`` and hands
every exit to every subscriber. A caller that spawns a process subscribes *before* the spawn, so an
exit that arrives before the caller looks for it is still seen.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_PDEATHSIG = 1

# Signals whose disposition a spawned program must get back: Python ignores SIGPIPE and
# SIGXFSZ, and ignored dispositions survive exec.
_RESTORE_DEFAULT = (signal.SIGPIPE, signal.SIGXFSZ)


@dataclass(frozen=True, slots=True)
class Exit:
    """One reaped child: its pid, its status as the shell reports it (128+N for signal N) and
    the wall-clock time it was reaped, in nanoseconds since the epoch."""

    pid: int
    status: int
    timestamp_ns: int


def exit_status(wait_status: int) -> int:
    """The shell-style status for a raw wait(2) status: the exit code, or 128 + signal."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 255


def set_child_subreaper(on: bool = True) -> None:
    """prctl(PR_SET_CHILD_SUBREAPER, on) for this process."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def is_child_subreaper() -> bool:
    """prctl(PR_GET_CHILD_SUBREAPER) for this process."""
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(0)
    if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_GET_CHILD_SUBREAPER): {os.strerror(err)}")
    return value.value != 0


class Subscription:
    """Exits delivered by the reaper from the moment of subscription.

    Either collected (``wait(pid)`` returns the exit of one pid, whenever it came) or handed to a
    callback. Close it (or use it as a context manager) when done.
    """

    def __init__(self, reaper: Reaper, callback: Callable[[Exit], None] | None) -> None:
        self._reaper = reaper
        self._callback = callback
        self._exits: dict[int, Exit] = {}
        self._waiters: dict[int, asyncio.Future[Exit]] = {}
        self.closed = False

    def _deliver(self, e: Exit) -> None:
        if self._callback is not None:
            self._callback(e)
            return
        waiter = self._waiters.pop(e.pid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(e)
        else:
            self._exits[e.pid] = e

    def exited(self, pid: int) -> Exit | None:
        """The exit of ``pid`` if it has been seen."""
        return self._exits.get(pid)

    def pop(self, pid: int) -> Exit | None:
        """The exit of ``pid`` if it has been seen, forgetting it."""
        return self._exits.pop(pid, None)

    async def wait(self, pid: int) -> Exit:
        """The exit of ``pid``; returns at once if it was already reaped."""
        e = self._exits.pop(pid, None)
        if e is not None:
            return e
        fut: asyncio.Future[Exit] = asyncio.get_running_loop().create_future()
        self._waiters[pid] = fut
        try:
            return await fut
        finally:
            self._waiters.pop(pid, None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._reaper._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Reaper:
    """Owns every wait of the process it runs in; see the module docstring."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop, *, subreaper: bool = True) -> None:
        """Become a child subreaper (optionally), handle SIGCHLD on ``loop``, reap what is due."""
        if subreaper:
            set_child_subreaper()
        self._loop = loop
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()

    def uninstall(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None

    def subscribe(self, callback: Callable[[Exit], None] | None = None) -> Subscription:
        """Start receiving exits; register before spawning what you will wait for."""
        sub = Subscription(self, callback)
        self._subscribers.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        try:
            self._subscribers.remove(sub)
        except ValueError:
            pass

    def reap(self) -> list[Exit]:
        """Collect every exited child now and fan the exits out; returns them."""
        exits: list[Exit] = []
        while True:
            try:
                pid, status, _rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:
                break
            exits.append(Exit(pid, exit_status(status), time.time_ns()))
        self.dispatch(exits)
        return exits

    def dispatch(self, exits: Sequence[Exit]) -> None:
        """Hand ``exits`` to every subscriber (what ``reap`` does; tests call it directly)."""
        for e in exits:
            for sub in list(self._subscribers):
                try:
                    sub._deliver(e)
                except Exception:
                    log.exception("exit subscriber failed for pid %d", e.pid)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        env: Mapping[str, str] | None = None,
        pass_fds: Mapping[int, int] | None = None,
        setsid: bool = False,
    ) -> int:
        """posix_spawn ``argv[0]`` (a path) and return its pid; never waits.

        ``stdin``/``stdout``/``stderr`` are fds to dup onto 0/1/2 (None: /dev/null);
        ``pass_fds`` maps target fd → source fd for extra fds the child keeps. Subscribe first.
        """
        wanted = {0: stdin, 1: stdout, 2: stderr, **(pass_fds or {})}
        top = max(wanted)
        temporary: list[int] = []
        try:
            null = -1
            if None in (stdin, stdout, stderr):
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                temporary.append(null)
            actions: list[tuple[int, int, int]] = []
            for target, src in wanted.items():
                fd = null if src is None else src
                # A source at or below the highest target could be overwritten by an earlier
                # dup2, and dup2(fd, fd) would not clear close-on-exec: move it out of the way.
                if fd <= top:
                    fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, top + 1)
                    temporary.append(fd)
                actions.append((os.POSIX_SPAWN_DUP2, fd, target))
            return os.posix_spawn(
                argv[0],
                list(argv),
                dict(os.environ if env is None else env),
                file_actions=actions,
                setsigdef=_RESTORE_DEFAULT,
                setsid=setsid,
            )
        finally:
            for fd in temporary:
                os.close(fd)
