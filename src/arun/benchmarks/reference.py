"""The reference daemon the benchmarks measure arun against: a private containerd 1.6."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


def containerd_config(root: Path, state: Path, sock: Path | str) -> str:
    """A version 2 config for a containerd of the benchmark's own: its root, state and sockets,
    no CRI plugin, no debug or metrics listener (nothing shared with a system containerd)."""
    return (
        "version = 2\n"
        f'root = "{root}"\n'
        f'state = "{state}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        '[debug]\n  address = ""\n'
        '[metrics]\n  address = ""\n'
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop a daemon a benchmark started: SIGTERM, ``timeout`` seconds to exit, then SIGKILL;
    reaped either way."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
