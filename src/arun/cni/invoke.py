"""Running CNI plugin executables: the protocol of the CNI spec's "Parameters" section.

A plugin is found by its ``type`` in a list of directories, run with the
operation in ``CNI_*`` environment variables and the network configuration on
stdin, and answers with a JSON document on stdout: a result (ADD), version
information (VERSION), nothing (DEL, CHECK, STATUS, GC) or, with a non-zero
exit, an error ``{"code", "msg", "details"}``.

Plugins run as subprocesses (this is daemon code, not the shim) under a
timeout; on timeout or cancellation the process is killed and reaped before
the error propagates, so no plugin outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from arun.cni.errors import InvalidResultError, PluginError, PluginNotFoundError, plugin_error
from arun.cni.types import CURRENT_VERSION, JSON, Result, parse_result
from arun.errdefs import DeadlineExceededError

__all__ = [
    "DEFAULT_BIN_DIRS",
    "DEFAULT_PLUGIN_TIMEOUT",
    "Args",
    "Executor",
    "PluginExecutor",
    "find_plugin",
]

log = logging.getLogger(__name__)

#: Searched in order: the upstream location, then Debian's (package containernetworking-plugins).
DEFAULT_BIN_DIRS: tuple[str, ...] = ("/opt/cni/bin", "/usr/lib/cni")
DEFAULT_PLUGIN_TIMEOUT = 60.0
_TXTBSY_RETRIES = 5


def find_plugin(plugin_type: str, dirs: Sequence[str]) -> str:
    """The path of the executable for ``plugin_type``: the first regular file found in ``dirs``."""
    if not plugin_type:
        raise PluginNotFoundError("no plugin name provided")
    if os.sep in plugin_type:
        raise PluginNotFoundError(f"invalid plugin name {plugin_type!r}")
    if not dirs:
        raise PluginNotFoundError(f"failed to find plugin {plugin_type!r}: no plugin directories configured")
    for d in dirs:
        path = os.path.join(d, plugin_type)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if os.path.isfile(path) and st.st_mode & 0o111:
            return path
    raise PluginNotFoundError(f"failed to find plugin {plugin_type!r} in path {list(dirs)}")


@dataclass(frozen=True)
class Args:
    """The ``CNI_*`` environment of one invocation."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    plugin_args: Sequence[tuple[str, str]] = ()
    path: Sequence[str] = ()

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The process environment: ``base`` (default: ours) with the CNI variables on top."""
        env = dict(os.environ if base is None else base)
        env.update(
            CNI_COMMAND=self.command,
            CNI_CONTAINERID=self.container_id,
            CNI_NETNS=self.netns,
            CNI_ARGS=";".join(f"{k}={v}" for k, v in self.plugin_args),
            CNI_IFNAME=self.ifname,
            CNI_PATH=os.pathsep.join(self.path),
        )
        return env


class Executor(Protocol):
    """How plugins are run; tests may substitute a recording fake."""

    async def exec_plugin(self, plugin_path: str, stdin: bytes, args: Args, what: str) -> bytes: ...


class PluginExecutor:
    """Runs plugin binaries as subprocesses, each under ``timeout`` seconds.

    The child is started with Python's ``subprocess`` (``vfork``: a couple of milliseconds
    however big the daemon is; uvloop's libuv spawn forks the whole address space, which
    stalled the event loop for tens of milliseconds per plugin) and waited for in a worker
    thread, so the loop only ever blocks for the spawn itself.
    """

    def __init__(self, timeout: float = DEFAULT_PLUGIN_TIMEOUT) -> None:
        self.timeout = timeout

    async def _spawn(self, plugin_path: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        # libcni retries "text file busy": a plugin binary being replaced while we start it.
        for attempt in range(_TXTBSY_RETRIES + 1):
            try:
                # vfork + exec: about a millisecond on the loop, unlike uvloop's fork of the daemon.
                return subprocess.Popen(  # noqa: ASYNC220
                    [plugin_path],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    close_fds=True,
                )
            except OSError as exc:
                if exc.errno != errno.ETXTBSY or attempt == _TXTBSY_RETRIES:
                    raise
                await asyncio.sleep(1.0)
        raise AssertionError("unreachable")

    async def exec_plugin(self, plugin_path: str, stdin: bytes, args: Args, what: str) -> bytes:
        """Run the plugin; return its stdout or raise a PluginError built from its error document.

        ``what`` prefixes error messages, e.g. ``plugin type='bridge' failed (add)``.
        """
        plugin = os.path.basename(plugin_path)
        try:
            proc = await self._spawn(plugin_path, args.environ())
        except OSError as exc:
            raise plugin_error(
                f"{what}: cannot execute {plugin_path!r}: {exc.strerror}", plugin=plugin, command=args.command
            ) from exc
        waiter = asyncio.ensure_future(asyncio.to_thread(proc.communicate, stdin))
        try:
            async with asyncio.timeout(self.timeout):
                stdout, stderr = await asyncio.shield(waiter)
        except TimeoutError as exc:
            await _kill(proc, waiter)
            raise DeadlineExceededError(
                f"{what}: plugin {plugin!r} timed out after {self.timeout:g}s"
            ) from exc
        except BaseException:
            await _kill(proc, waiter)
            raise
        err_text = stderr.decode(errors="replace").strip()
        if err_text:
            log.debug("cni plugin %s (%s) stderr: %s", plugin, args.command, err_text)
        if proc.returncode != 0:
            raise _error_from_output(what, plugin, args.command, proc.returncode, stdout, err_text)
        return stdout


async def _kill(proc: subprocess.Popen[bytes], waiter: asyncio.Future[tuple[bytes, bytes]]) -> None:
    """Kill the plugin and wait until the thread waiting for it has reaped it."""
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    with contextlib.suppress(BaseException):
        await asyncio.shield(waiter)


def _error_from_output(
    what: str, plugin: str, command: str, returncode: int | None, stdout: bytes, stderr: str
) -> PluginError:
    text = stdout.decode(errors="replace").strip()
    if not text:
        reason = (
            f"failed: {stderr!r}" if stderr else f"failed with no error message (exit status {returncode})"
        )
        return plugin_error(f"{what}: netplugin {reason}", plugin=plugin, command=command, stderr=stderr)
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        code = doc.get("code", 0)
        msg = doc.get("msg", "")
        details = doc.get("details", "")
        if not isinstance(code, int) or not isinstance(msg, str) or not isinstance(details, str):
            raise ValueError("bad field types")
    except ValueError:
        return plugin_error(
            f"{what}: netplugin failed but its error message could not be parsed: {text!r}",
            plugin=plugin,
            command=command,
            stderr=stderr,
        )
    message = f"{what}: {msg}" + (f"; {details}" if details else "")
    return plugin_error(
        message, plugin=plugin, command=command, cni_code=code, cni_msg=msg, details=details, stderr=stderr
    )


def decode_result(stdout: bytes, conf_version: str, what: str) -> tuple[JSON, Result]:
    """The ADD result: libcni's fixupResultVersion (no version → the config's), then parse."""
    try:
        raw = json.loads(stdout) if stdout.strip() else {}
    except ValueError as exc:
        raise InvalidResultError(f"{what}: cannot decode the result: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidResultError(f"{what}: the result is not a JSON object")
    if not raw.get("cniVersion"):
        raw["cniVersion"] = conf_version
    try:
        return raw, parse_result(raw)
    except InvalidResultError as exc:
        raise InvalidResultError(f"{what}: {exc.message}") from exc


async def version_info(executor: Executor, plugin_path: str) -> list[str]:
    """The spec versions a plugin supports (VERSION command)."""
    args = Args(command="VERSION", netns="dummy", ifname="dummy", path=("dummy",))
    stdin = json.dumps({"cniVersion": CURRENT_VERSION}).encode()
    what = f"plugin {os.path.basename(plugin_path)!r} failed (version)"
    try:
        out = await executor.exec_plugin(plugin_path, stdin, args, what)
    except PluginError as exc:
        if exc.cni_msg == "unknown CNI_COMMAND: VERSION":
            return ["0.1.0"]
        raise
    try:
        doc = json.loads(out)
    except ValueError as exc:
        raise InvalidResultError(f"{what}: cannot decode version info: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidResultError(f"{what}: version info is not a JSON object")
    versions = doc.get("supportedVersions")
    if versions is None:
        v = doc.get("cniVersion")
        return [v] if isinstance(v, str) and v else ["0.1.0"]
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise InvalidResultError(f"{what}: 'supportedVersions' must be a list of strings")
    return list(versions)
