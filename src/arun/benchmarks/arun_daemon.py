"""A private arun daemon for benchmarks (own root, state and socket), and a sampler that
calls the gRPC ``Version`` RPC at a fixed interval from another process and reports
each call's latency — the measure of whether the daemon's loop stays responsive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from arun.benchmarks.reference import stop

__all__ = ["private_arun", "version_sampler"]


def _env(pythonpath: str | None = None) -> dict[str, str]:
    path = pythonpath if pythonpath is not None else os.pathsep.join(p for p in sys.path if p)
    return {**os.environ, "PYTHONPATH": path}


def _spawn(argv: Sequence[str], log_path: Path, pythonpath: str | None = None) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=_env(pythonpath)
        )


async def _version_ok(sock: str) -> bool:
    from google.protobuf import empty_pb2
    from grpclib.client import Channel

    from arun.api.containerd.services.version.v1 import version_grpc

    ch = Channel(path=sock)
    try:
        await asyncio.wait_for(version_grpc.VersionStub(ch).Version(empty_pb2.Empty()), 1)
        return True
    except Exception:
        return False
    finally:
        ch.close()


@contextlib.asynccontextmanager
async def private_arun(
    workdir: Path, config: str = "", *, keep: bool = False, pythonpath: str | None = None
) -> AsyncIterator[str]:
    """Start ``arun daemon`` under ``workdir``; yields its socket path. The directory is
    removed when the daemon stops, unless ``keep`` (the caller removes it later).
    ``pythonpath``: run the arun found there (another tree's ``src``) instead of this one."""
    root, state = workdir / "root", workdir / "state"
    root.mkdir(parents=True)
    state.mkdir(parents=True)
    sock = str(state / "arun.sock")
    argv = [
        sys.executable,
        "-m",
        "arun",
        "daemon",
        "--root",
        str(root),
        "--state",
        str(state),
        "--address",
        sock,
    ]
    if config:
        cfg = workdir / "config.toml"
        cfg.write_text(config)
        argv += ["--config", str(cfg)]
    log_path = workdir / "arun.log"
    proc = _spawn(argv, log_path, pythonpath)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"arun daemon exited:\n{log_path.read_text()[-3000:]}")
            if await asyncio.to_thread(os.path.exists, sock) and await _version_ok(sock):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"arun daemon did not start:\n{log_path.read_text()[-3000:]}")
        yield sock
    finally:
        await asyncio.to_thread(stop, proc)
        await asyncio.to_thread(subprocess.run, ["umount", "-R", str(root)], capture_output=True, check=False)
        if not keep:
            await asyncio.to_thread(shutil.rmtree, workdir, True)


_SAMPLER = r"""
import asyncio, json, sys, time
from grpclib.client import Channel
from google.protobuf import empty_pb2
from arun.api.containerd.services.version.v1 import version_grpc

async def main(sock, interval):
    ch = Channel(path=sock)
    stub = version_grpc.VersionStub(ch)
    out = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    nxt = time.perf_counter()
    while not stop.is_set():
        t = time.perf_counter()
        try:
            await stub.Version(empty_pb2.Empty())
            out.append(time.perf_counter() - t)
        except Exception:
            out.append(float("inf"))
        nxt += interval
        await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
    ch.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


@contextlib.asynccontextmanager
async def version_sampler(sock: str, interval: float = 0.01) -> AsyncIterator[list[float]]:
    """Call Version every ``interval`` seconds from a separate process while the block
    runs; the yielded list holds the latencies (seconds) once the block exits."""
    samples: list[float] = []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SAMPLER, sock, str(interval),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_env(),
    )  # fmt: skip
    try:
        await asyncio.sleep(0.2)
        yield samples
    finally:
        out, _ = await proc.communicate(b"stop\n")
        with contextlib.suppress(ValueError):
            samples.extend(json.loads(out or b"[]"))
