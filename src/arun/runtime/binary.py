"""Shim binaries: from a runtime name to a command, and the ``start`` and ``delete`` commands.

Resolution follows containerd (``resolveRuntimePath``): an absolute path is used as
it is (it must exist); any other name with a ``/`` is refused; otherwise the name's
last two dot-separated parts give ``containerd-shim-<a>-<b>`` (``io.containerd.runc.v2``
→ ``containerd-shim-runc-v2``), searched in the runtime's own directory, on ``$PATH``,
then next to the daemon's executable. arun's own runtime, ``io.containerd.arun.v1``, is
always the shim of the running daemon's code: ``<python> -m arun.shim``, so a daemon and
its shims never run different versions.

``start`` is run as containerd runs it: flags ``-namespace -address -publish-binary -id
[-debug] start``, the bundle as working directory, ``TTRPC_ADDRESS``/``GRPC_ADDRESS``/
``NAMESPACE``/``MAX_SHIM_VERSION`` in the environment, a new process group, stdout and
stderr read together. arun's shim gets a ``BootstrapParams`` message on stdin (the
protocol of containerd 2.3); other shims get what containerd 1.x and 2.0-2.2 send, the
runtime options as a serialized Any (a 1.x shim cannot read the newer message). The
reply is parsed as containerd does: a ``BootstrapResult``, else JSON, else a plain
address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from google.protobuf.message import DecodeError

from arun.api.containerd.runtime.bootstrap.v1 import bootstrap_pb2
from arun.api.containerd.runtime.task.v2 import shim_pb2 as task_v2
from arun.core.runtime import RUNTIME_ARUN, AnyValue, Exit
from arun.errdefs import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)

log = logging.getLogger(__name__)

# The directory the running arun package was imported from.
_ARUN_PATH = str(Path(__file__).resolve().parent.parent.parent)

START_TIMEOUT = 30.0  # a shim's `start` command (containerd has none; a hung binary must not hang us)
CLEANUP_TIMEOUT = 5.0  # io.containerd.timeout.shim.cleanup
MAX_VERSION = 3

# The runtime name recorded in shim-binary-path for arun's built-in shim (it has no file).
BUILTIN_SHIM = RUNTIME_ARUN


@dataclass(frozen=True)
class ShimBinary:
    """A resolved shim: the command prefix to run it with."""

    runtime: str
    argv: tuple[str, ...]
    # arun's own shim of this daemon's code: it reads BootstrapParams, and the zygote can fork it.
    builtin: bool = False

    @property
    def recorded(self) -> str:
        """What ``shim-binary-path`` holds: the binary's path, or the runtime name of the
        built-in shim (resolving it again gives the same command)."""
        return BUILTIN_SHIM if self.builtin else self.argv[0]


def binary_name(runtime: str) -> str:
    """``containerd-shim-<a>-<b>`` for a runtime name ``….<a>.<b>``, or "" if it has no such form."""
    parts = runtime.split(".")
    if len(parts) < 2 or not parts[0]:
        return ""
    return f"containerd-shim-{parts[-2]}-{parts[-1]}"


def builtin_shim() -> ShimBinary:
    return ShimBinary(RUNTIME_ARUN, (sys.executable, "-m", "arun.shim"), builtin=True)


def _daemon_dirs() -> list[str]:
    dirs = []
    for exe in (sys.argv[0] if sys.argv and sys.argv[0] else "", sys.executable):
        if exe and os.path.isabs(exe):
            d = os.path.dirname(exe)
            if d not in dirs:
                dirs.append(d)
    return dirs


class Resolver:
    """Runtime names to shims, cached per binary name as containerd does."""

    def __init__(self, extra_dirs: Sequence[str] = ()) -> None:
        self._cache: dict[str, ShimBinary] = {}
        self._extra = list(extra_dirs)

    def resolve(self, runtime: str) -> ShimBinary:
        if not runtime:
            raise InvalidArgumentError("no runtime name")
        if runtime == RUNTIME_ARUN or runtime == BUILTIN_SHIM:
            return builtin_shim()
        if os.path.isabs(runtime):
            if not os.path.exists(runtime):
                raise NotFoundError(f"invalid custom binary path: {runtime!r} does not exist")
            return ShimBinary(runtime, (runtime,))
        if "/" in runtime:
            raise InvalidArgumentError(
                f"invalid runtime name {runtime!r}: a runtime is a name like 'io.containerd.runc.v2' "
                "or an absolute path to a shim binary"
            )
        name = binary_name(runtime)
        if not name:
            raise InvalidArgumentError(
                f"invalid runtime name {runtime!r}, correct runtime name should be either format like "
                "'io.containerd.runc.v1' or a full path to the binary"
            )
        cached = self._cache.get(name)
        if cached is not None:
            return ShimBinary(runtime, cached.argv)
        path = self._search(name)
        if path is None:
            raise NotFoundError(f"runtime {runtime!r} binary not installed {name!r}")
        found = ShimBinary(runtime, (os.path.abspath(path),))
        self._cache[name] = found
        return found

    def _search(self, name: str) -> str | None:
        found = shutil.which(name)
        if found:
            return found
        for d in [*self._extra, *_daemon_dirs()]:
            candidate = os.path.join(d, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        return None


# -- start -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShimEnv:
    """What every shim command of one daemon gets."""

    grpc_address: str
    ttrpc_address: str
    # The daemon's own executable (``-publish-binary``; shims of 1.6 and later publish over ttrpc).
    publish_binary: str = ""
    socket_dir: str = ""
    debug: bool = False
    version: str = ""
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def environment(self, namespace: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        # arun's own shim runs this daemon's code, wherever it was imported from.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_ARUN_PATH, env.get("PYTHONPATH", "")) if p and p != "."
        )
        env["TTRPC_ADDRESS"] = self.ttrpc_address
        env["GRPC_ADDRESS"] = self.grpc_address
        env["NAMESPACE"] = namespace
        env["MAX_SHIM_VERSION"] = "2"
        return env

    def flags(self, namespace: str, id: str) -> list[str]:
        argv = ["-namespace", namespace, "-address", self.grpc_address]
        argv += ["-publish-binary", self.publish_binary or sys.executable, "-id", id]
        if self.debug:
            argv.append("-debug")
        return argv


@dataclass(frozen=True)
class BootstrapResult:
    """Where a started shim listens (``bootstrap.json``)."""

    version: int
    address: str
    protocol: str = "ttrpc"

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "address": self.address, "protocol": self.protocol})

    @classmethod
    def from_json(cls, text: str) -> BootstrapResult:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("address"), str):
            raise ValueError("bootstrap.json has no address")
        version = data.get("version", 2)
        protocol = data.get("protocol") or "ttrpc"
        if not isinstance(version, int) or not isinstance(protocol, str):
            raise ValueError("bootstrap.json: bad version or protocol")
        return cls(version, data["address"], protocol)

    @property
    def endpoint(self) -> str:
        """``<protocol>+<address>``, the form containerd gives sandbox controllers."""
        return f"{self.protocol}+{self.address}"


def _plausible_address(address: str) -> bool:
    return bool(address) and address.isprintable() and not address.startswith(("{", "\n"))


def parse_start_output(out: bytes) -> BootstrapResult:
    """The reply of ``start``: a BootstrapResult message, else JSON ``{"version","address",
    "protocol"}``, else the whole output as a ttrpc address of version 2."""
    result: BootstrapResult | None = None
    try:
        msg = bootstrap_pb2.BootstrapResult.FromString(out)
    except DecodeError:
        msg = None
    if msg is not None and msg.version >= 2 and _plausible_address(msg.address):
        result = BootstrapResult(msg.version, msg.address, msg.protocol or "ttrpc")
    if result is None:
        text = out.decode("utf-8", errors="replace").strip()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("version"), int) and data["version"] >= 2:
            address = data.get("address")
            if not isinstance(address, str) or not address:
                raise FailedPreconditionError(f"shim start reply has no address: {text!r}")
            result = BootstrapResult(data["version"], address, str(data.get("protocol") or "ttrpc"))
        else:
            if not text:
                raise FailedPreconditionError("shim start printed no address")
            result = BootstrapResult(2, text, "ttrpc")
    if result.version > MAX_VERSION:
        raise UnimplementedError(f"unsupported shim version {result.version}")
    if result.protocol not in ("ttrpc", "grpc"):
        raise UnimplementedError(f"unsupported shim protocol {result.protocol!r}")
    if result.protocol == "grpc":
        raise UnimplementedError("shims serving gRPC are not supported by arun")
    return result


def bootstrap_params(
    env: ShimEnv, namespace: str, id: str, options: AnyValue | None
) -> bootstrap_pb2.BootstrapParams:
    params = bootstrap_pb2.BootstrapParams(
        instance_id=id,
        namespace=namespace,
        log_level=bootstrap_pb2.LOG_LEVEL_DEBUG if env.debug else bootstrap_pb2.LOG_LEVEL_INFO,
        containerd_version=env.version,
        containerd_ttrpc_address=env.ttrpc_address,
        containerd_grpc_address=env.grpc_address,
        containerd_binary=env.publish_binary or sys.executable,
    )
    if env.socket_dir:
        params.socket_dir = env.socket_dir
    if options is not None:
        ext = params.extensions.add()
        ext.value.type_url = options.type_url
        ext.value.value = options.value
    return params


def options_any(options: AnyValue | None) -> bytes:
    """The runtime options as a serialized ``google.protobuf.Any`` (empty for none)."""
    if options is None:
        return b""
    from google.protobuf import any_pb2

    data: bytes = any_pb2.Any(type_url=options.type_url, value=options.value).SerializeToString()
    return data


async def _run(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    stdin: bytes,
    timeout: float,  # noqa: ASYNC109 - the whole command's limit, killed after it
    combine: bool,
) -> tuple[int, bytes, bytes]:
    """Run a command to completion; (status, stdout, stderr). Killed (its group) on timeout.

    Python's subprocess, not the event loop's: uvloop leaves the originals of a child's
    stdio descriptors open in it, so a shim's long-running server, started by ``start``,
    would inherit our pipe and its end-of-file would never come."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - a vfork and exec; the waiting is in a thread
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if combine else subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    try:
        out, err = await asyncio.to_thread(proc.communicate, stdin, timeout)
    except BaseException as e:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if isinstance(e, subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.communicate)
            raise TimeoutError(f"{argv[0]} did not finish in {timeout}s") from None
        raise
    return proc.returncode, out or b"", err or b""


async def start(
    shim: ShimBinary,
    env: ShimEnv,
    bundle: Path,
    namespace: str,
    id: str,
    options: AnyValue | None,
    *,
    timeout: float = START_TIMEOUT,  # noqa: ASYNC109 - the command is killed after it
) -> BootstrapResult:
    """Run ``<shim> … start`` in ``bundle``; where the shim listens."""
    argv = [*shim.argv, *env.flags(namespace, id), "start"]
    if shim.builtin:
        stdin = bootstrap_params(env, namespace, id, options).SerializeToString()
    else:
        stdin = options_any(options)
    try:
        code, out, _ = await _run(
            argv, cwd=bundle, env=env.environment(namespace), stdin=stdin, timeout=timeout, combine=True
        )
    except TimeoutError:
        raise DeadlineExceededError(f"shim {shim.argv[-1]!r} start did not finish in {timeout}s") from None
    except FileNotFoundError as e:
        raise NotFoundError(f"shim binary {shim.argv[0]!r} not found") from e
    if code != 0:
        text = out.decode("utf-8", errors="replace").strip()
        raise FailedPreconditionError(f"shim start failed (exit status {code}): {text}")
    return parse_start_output(out)


# -- delete ----------------------------------------------------------------------------------------


async def delete(
    shim: ShimBinary,
    env: ShimEnv,
    bundle: Path,
    namespace: str,
    id: str,
    *,
    timeout: float = CLEANUP_TIMEOUT,  # noqa: ASYNC109 - the command is killed after it
) -> Exit:
    """Run ``<shim> … -bundle <bundle> delete``: clean up after a shim that is gone.

    The reply is a ``DeleteResponse``; what the shim prints on stderr is logged."""
    argv = [*shim.argv, *env.flags(namespace, id), "-bundle", str(bundle), "delete"]
    try:
        code, out, err = await _run(
            argv,
            cwd=bundle if await asyncio.to_thread(bundle.is_dir) else None,
            env=env.environment(namespace),
            stdin=b"",
            timeout=timeout,
            combine=False,
        )
    except TimeoutError:
        raise DeadlineExceededError(f"shim delete of {id!r} did not finish in {timeout}s") from None
    text = err.decode("utf-8", errors="replace").strip()
    if code != 0:
        raise FailedPreconditionError(f"shim delete of {id!r} failed (exit status {code}): {text}")
    if text:
        log.warning("shim cleanup warnings", extra={"id": id, "namespace": namespace, "output": text})
    try:
        resp = task_v2.DeleteResponse.FromString(out)
    except DecodeError as e:
        raise FailedPreconditionError(f"shim delete of {id!r} printed an invalid DeleteResponse") from e
    exited: datetime | None = None
    if resp.HasField("exited_at"):
        from datetime import UTC

        exited = resp.exited_at.ToDatetime(tzinfo=UTC)
    return Exit(pid=resp.pid, status=resp.exit_status, timestamp=exited)
