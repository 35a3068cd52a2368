"""A real ``arun daemon`` subprocess on temporary directories, for integration tests.

::

    d = Daemon.start()             # waits until the socket answers
    d.ctr("namespaces", "ls")      # Debian's ctr against it
    async with d.channel() as ch:  # a grpclib client
        ...
    assert d.stop() == 0           # SIGTERM; the exit status

The daemon runs ``sys.executable -m arun daemon`` with ``PYTHONPATH`` set to
the ``src`` directory this ``arun`` was imported from, never an installed
``arun``. Everything lives under one short temporary directory (unix socket
paths are limited to 107 bytes): ``root/``, ``state/``, ``arun.sock`` and
``daemon.log`` (its stderr). ``stop()`` removes it unless ``keep=True``.

``imports`` names extra modules the daemon imports before it starts, through
``python -m arun.testing.daemon_main``: test plugins register themselves on
the default registry that way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import arun

# The src directory holding the arun package the tests run against.
SRC = Path(arun.__file__).resolve().parent.parent
CTR = "ctr"


class DaemonError(RuntimeError):
    """The daemon did not start (its log is in the message)."""


def _socket_answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


@dataclass
class Daemon:
    base: Path
    proc: subprocess.Popen[bytes]
    args: list[str]
    root: Path
    state: Path
    address: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    returncode: int | None = None

    @classmethod
    def command(
        cls,
        *,
        base: Path,
        config: str | Path | None = None,
        extra_args: Sequence[str] = (),
        imports: Sequence[str] = (),
        address: Path | None = None,
    ) -> list[str]:
        """The argv for a daemon under ``base``."""
        argv = [sys.executable, "-m"]
        if imports:
            argv += ["arun.testing.daemon_main"]
            for m in imports:
                argv += ["--import", m]
            argv += ["--"]
        else:
            argv += ["arun"]
        argv += [
            "daemon",
            "--root",
            str(base / "root"),
            "--state",
            str(base / "state"),
            "--address",
            str(address or base / "arun.sock"),
        ]
        if config is not None:
            argv += ["--config", str(config)]
        return argv + list(extra_args)

    @classmethod
    def environment(
        cls, extra: Mapping[str, str] | None = None, pythonpath: Iterable[Path] = ()
    ) -> dict[str, str]:
        env = dict(os.environ)
        paths = [str(SRC), *(str(p) for p in pythonpath)]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.update(extra or {})
        return env

    @classmethod
    def start(
        cls,
        *,
        config: str | None = None,
        config_text: str | None = None,
        extra_args: Sequence[str] = (),
        imports: Sequence[str] = (),
        pythonpath: Iterable[Path] = (),
        env: Mapping[str, str] | None = None,
        base: Path | None = None,
        address: Path | None = None,
        timeout: float = 120.0,
    ) -> Daemon:
        """Start a daemon and wait until its socket answers; DaemonError if it exits first.

        ``timeout`` is generous on purpose: on a 2-core machine at load 15+ a healthy daemon took
        more than 30 s to serve. The wait ends as soon as the socket answers.
        """
        created = base is None
        base = base or Path(tempfile.mkdtemp(prefix="arun-", dir="/tmp"))
        if config_text is not None:
            (base / "config.toml").write_text(config_text)
            config = str(base / "config.toml")
        args = cls.command(base=base, config=config, extra_args=extra_args, imports=imports, address=address)
        log_path = base / "daemon.log"
        full_env = cls.environment(env, pythonpath)
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=full_env, cwd=base
            )
        d = cls(
            base=base,
            proc=proc,
            args=args,
            root=base / "root",
            state=base / "state",
            address=address or base / "arun.sock",
            log_path=log_path,
            env=full_env,
        )
        try:
            d.wait_ready(timeout)
        except BaseException:
            d.kill()
            if created:  # the error carries the log; leave no directory behind
                shutil.rmtree(base, ignore_errors=True)
            raise
        return d

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.returncode = code
                raise DaemonError(f"arun daemon exited with {code} before serving:\n{self.logs()}")
            if self.address.exists() and _socket_answers(self.address):
                return
            time.sleep(0.05)
        raise DaemonError(f"arun daemon did not serve on {self.address} within {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- clients -------------------------------------------------------------------------------

    def ctr(
        self, *args: str, namespace: str = "default", check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run Debian's ``ctr --address <socket> -n <namespace> ARGS``."""
        cmd = [CTR, "--address", str(self.address), "--namespace", namespace, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[object]:
        """A grpclib Channel to the daemon (closed on exit)."""
        from grpclib.client import Channel

        ch = Channel(path=str(self.address))
        try:
            yield ch
        finally:
            ch.close()

    # -- stopping ------------------------------------------------------------------------------

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0, keep: bool = False) -> int:
        """SIGTERM and wait; returns the exit status (the daemon is killed after ``timeout``)."""
        try:
            self.signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise DaemonError(
                    f"arun daemon did not exit {timeout}s after SIGTERM:\n{self.logs()}"
                ) from None
            return self.returncode
        finally:
            if not keep:
                self.cleanup()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.returncode = self.proc.wait()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.base, ignore_errors=True)


def run_daemon(
    *,
    config_text: str | None = None,
    config: str | None = None,
    extra_args: Sequence[str] = (),
    base: Path | None = None,
    address: Path | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run a daemon expected to exit by itself (a start-up failure); its status and output."""
    own = base is None
    base = base or Path(tempfile.mkdtemp(prefix="arun-", dir="/tmp"))
    try:
        if config_text is not None:
            (base / "config.toml").write_text(config_text)
            config = str(base / "config.toml")
        args = Daemon.command(base=base, config=config, extra_args=extra_args, address=address)
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=Daemon.environment(),
            cwd=base,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    finally:
        if own:
            shutil.rmtree(base, ignore_errors=True)
