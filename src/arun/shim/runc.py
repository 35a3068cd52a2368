"""The OCI runtime command line (runc, or crun which takes the same flags), one method per command.

Every invocation is spawned through the shim's :class:`~arun.shim.reaper.Reaper` and waited for
through a subscription taken before the spawn: nothing here calls ``wait``. A failure raises an
errdefs error whose message carries the runtime's own words — the last ``error`` line it wrote to
``--log`` (``log.json`` in the bundle) during this call, else its stderr.

``create`` and ``exec`` hand the container its stdio directly (pipes, or /dev/null), so their
stderr is the container's and only the log file explains a failure, as with go-runc.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from arun import errdefs
from arun.shim import util
from arun.shim.reaper import Reaper

DEFAULT_BINARY = "runc"

#: (stdin, stdout, stderr) fds for the runtime's child, None meaning /dev/null.
StdioFds = tuple[int | None, int | None, int | None]
NULL_STDIO: StdioFds = (None, None, None)


class Runc(Protocol):
    """What the shim needs from an OCI runtime; :class:`RuncCli` runs the real binary and
    ``arun.testing.shim.FakeRunc`` records calls for unit tests."""

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
    ) -> None: ...

    async def start(self, id: str) -> None: ...

    async def state(self, id: str) -> dict[str, Any]: ...

    async def kill(self, id: str, signal: int, *, all: bool = False) -> None: ...

    async def delete(self, id: str, *, force: bool = False) -> None: ...

    async def exec(
        self,
        id: str,
        process: Mapping[str, Any],
        *,
        pid_file: str,
        stdio: StdioFds = NULL_STDIO,
        console_socket: str | None = None,
    ) -> None: ...

    async def pause(self, id: str) -> None: ...

    async def resume(self, id: str) -> None: ...

    async def update(self, id: str, resources: Mapping[str, Any]) -> None: ...

    async def ps(self, id: str) -> list[int]: ...

    async def stats(self, id: str) -> dict[str, Any]: ...

    async def checkpoint(
        self, id: str, *, image_path: str, work_path: str, leave_running: bool = True
    ) -> None: ...


def classify(message: str) -> type[errdefs.ArunError]:
    """The errdefs class for a runtime failure message.

    The runtime reports everything with exit status 1, so its words are all there is to go on;
    this is the single boundary where text becomes a class (the phrases are runc's and crun's).
    """
    text = message.lower()
    if "container not running" in text or "no such process" in text or "process already finished" in text:
        return errdefs.NotFoundError
    if "does not exist" in text or "container not found" in text:
        return errdefs.NotFoundError
    if "already exists" in text:
        return errdefs.AlreadyExistsError
    if "not paused" in text or "is not running" in text:
        return errdefs.FailedPreconditionError
    return errdefs.UnknownError


@dataclass
class RuncCli:
    """Runs ``binary`` with ``--root root --log log --log-format json`` before each command."""

    reaper: Reaper
    root: str
    log: str
    binary: str = DEFAULT_BINARY
    systemd_cgroup: bool = False
    #: Where the process/resources JSON for ``exec``/``update`` is written (default: beside ``log``).
    workdir: str | None = None
    _resolved: str | None = field(default=None, repr=False)

    # -- helpers ----------------------------------------------------------------------------

    def _argv(self, args: Sequence[str]) -> list[str]:
        if self._resolved is None:
            self._resolved = resolve_binary(self.binary)
        argv = [self._resolved, "--root", self.root, "--log", self.log, "--log-format", "json"]
        if self.systemd_cgroup:
            argv.append("--systemd-cgroup")
        argv.extend(args)
        return argv

    def _log_size(self) -> int:
        try:
            return os.stat(self.log).st_size
        except OSError:
            return 0

    def _log_error(self, offset: int) -> str:
        """The last error message the runtime logged after ``offset``."""
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                text = f.read(1 << 20).decode(errors="replace")
        except OSError:
            return ""
        last = ""
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                last = str(entry.get("msg", ""))
        return last

    async def _run(self, args: Sequence[str], *, stdio: StdioFds | None = None) -> bytes:
        """Run one command; returns stdout (captured only when ``stdio`` is None).

        Failures of ``create``/``exec`` are UnknownError whatever they say (a missing executable
        inside the container is not a missing container); the others are classified.
        """
        argv = self._argv(args)
        offset = self._log_size()
        out = err = b""
        with self.reaper.subscribe() as sub:
            if stdio is None:
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                try:
                    pid = self.reaper.spawn(argv, stdout=out_w, stderr=err_w)
                finally:
                    os.close(out_w)
                    os.close(err_w)
                out, err = await asyncio.gather(read_all(out_r), read_all(err_r))
            else:
                pid = self.reaper.spawn(argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2])
            exit_ = await sub.wait(pid)
        if exit_.status != 0:
            detail = self._log_error(offset) or err.decode(errors="replace").strip()
            if not detail:
                detail = f"exit status {exit_.status}"
            cls = errdefs.UnknownError if stdio is not None else classify(detail)
            prefix = f"{os.path.basename(self.binary)} {args[0]} failed"
            # runc >= 1.1 logs "runc create failed: ..." itself: no second prefix.
            raise cls(detail if detail.startswith(prefix) else f"{prefix}: {detail}")
        return out

    def _write_json(self, prefix: str, value: Mapping[str, Any]) -> str:
        directory = self.workdir or os.path.dirname(self.log) or "."
        fd, path = util.make_temp_file(prefix, ".json", directory)
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
        return path

    # -- commands ---------------------------------------------------------------------------

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
        args = ["create", "--bundle", bundle, "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        if no_pivot:
            args.append("--no-pivot")
        if no_new_keyring:
            args.append("--no-new-keyring")
        args.append(id)
        await self._run(args, stdio=stdio)

    async def start(self, id: str) -> None:
        await self._run(["start", id])

    async def state(self, id: str) -> dict[str, Any]:
        out = await self._run(["state", id])
        value = json.loads(out)
        if not isinstance(value, dict):
            raise errdefs.UnknownError(f"runtime state of {id!r}: unexpected output {out[:200]!r}")
        return value

    async def kill(self, id: str, signal: int, *, all: bool = False) -> None:
        args = ["kill"]
        if all:
            args.append("--all")
        await self._run([*args, id, str(signal)])

    async def delete(self, id: str, *, force: bool = False) -> None:
        args = ["delete"]
        if force:
            args.append("--force")
        await self._run([*args, id])

    async def exec(
        self,
        id: str,
        process: Mapping[str, Any],
        *,
        pid_file: str,
        stdio: StdioFds = NULL_STDIO,
        console_socket: str | None = None,
    ) -> None:
        path = self._write_json(".exec-", process)
        try:
            args = ["exec", "--process", path, "--detach", "--pid-file", pid_file]
            if console_socket:
                args += ["--console-socket", console_socket]
            await self._run([*args, id], stdio=stdio)
        finally:
            _unlink(path)

    async def pause(self, id: str) -> None:
        await self._run(["pause", id])

    async def resume(self, id: str) -> None:
        await self._run(["resume", id])

    async def update(self, id: str, resources: Mapping[str, Any]) -> None:
        path = self._write_json(".resources-", resources)
        try:
            await self._run(["update", "--resources", path, id])
        finally:
            _unlink(path)

    async def ps(self, id: str) -> list[int]:
        out = await self._run(["ps", "--format", "json", id])
        value = json.loads(out or b"null")
        return [int(p) for p in value or []]

    async def stats(self, id: str) -> dict[str, Any]:
        out = await self._run(["events", "--stats", id])
        value = json.loads(out)
        if not isinstance(value, dict):
            raise errdefs.UnknownError(f"runtime stats of {id!r}: unexpected output {out[:200]!r}")
        data = value.get("data", {})
        return data if isinstance(data, dict) else {}

    async def checkpoint(
        self, id: str, *, image_path: str, work_path: str, leave_running: bool = True
    ) -> None:
        args = ["checkpoint", "--image-path", image_path, "--work-path", work_path]
        if leave_running:
            args.append("--leave-running")
        await self._run([*args, id])


def resolve_binary(binary: str) -> str:
    """An absolute path for ``binary``; NotFoundError if there is none."""
    try:
        return util.resolve_binary(binary)
    except FileNotFoundError as exc:
        raise errdefs.NotFoundError(str(exc)) from None


def read_all(fd: int) -> asyncio.Future[bytes]:
    """Everything readable from ``fd`` until EOF, without blocking the loop. ``fd`` is closed
    when the future is done, also when it is cancelled (a coroutine cancelled before its first
    step would never have closed it)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    done: asyncio.Future[bytes] = loop.create_future()

    def on_readable() -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if not done.done():
                    done.set_exception(exc)
                return
            if not data:
                if not done.done():
                    done.set_result(b"".join(chunks))
                return
            chunks.append(data)

    def finish(_: asyncio.Future[bytes]) -> None:
        loop.remove_reader(fd)
        os.close(fd)

    done.add_done_callback(finish)
    loop.add_reader(fd, on_readable)
    return done


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
