"""Harness for driving the real shim binary: busybox bundles, an Events server, clean-up.

Everything lives under one short temp dir (unix socket paths must fit in 108 bytes) with a
unique namespace, runc root, socket dir and cgroup parent, so parallel runs never collide; the
finalizer kills the shims it started (by pid), force-deletes containers left in its runc root,
unmounts anything under its dir, removes its cgroups and the dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SRC = str(Path(__file__).resolve().parents[3] / "src")


def busybox_spec(
    args: list[str],
    *,
    cgroups_path: str,
    terminal: bool = False,
    memory_limit: int | None = None,
    own_pid_ns: bool = True,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A minimal OCI spec for a rootfs holding only /bin/busybox."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    namespaces = [{"type": t} for t in ("ipc", "uts", "mount", "network")]
    if own_pid_ns:
        namespaces.append({"type": "pid"})
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "arun-shim-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
        },
    }
    if memory_limit is not None:
        spec["linux"]["resources"]["memory"] = {"limit": memory_limit, "swap": memory_limit}
    if annotations:
        spec["annotations"] = annotations
    return spec


@dataclass
class Forwarded:
    namespace: str
    topic: str
    type_url: str
    event: Any


class EventsServer:
    """containerd.services.events.ttrpc.v1.Events, recording what shims forward."""

    def __init__(self) -> None:
        self.received: list[Forwarded] = []
        self.changed = asyncio.Event()

    async def Forward(self, request: Any) -> Any:
        from google.protobuf import descriptor_pool, empty_pb2, message_factory

        from arun.api.containerd.events import task_pb2  # noqa: F401  (registers the types)

        env = request.envelope
        desc = descriptor_pool.Default().FindMessageTypeByName(env.event.type_url)
        event = message_factory.GetMessageClass(desc).FromString(env.event.value)
        self.received.append(Forwarded(env.namespace, env.topic, env.event.type_url, event))
        self.changed.set()
        return empty_pb2.Empty()

    def topics(self, container_id: str | None = None) -> list[str]:
        return [
            f.topic
            for f in self.received
            if container_id is None or getattr(f.event, "container_id", None) == container_id
        ]

    async def wait_for(self, topic: str, container_id: str) -> Forwarded:
        """The first event of ``topic`` for ``container_id`` (waiting up to 10 s)."""
        async with asyncio.timeout(10):
            while True:
                for f in self.received:
                    if f.topic == topic and getattr(f.event, "container_id", None) == container_id:
                        return f
                self.changed.clear()
                await self.changed.wait()


@dataclass
class ShimEnv:
    root: Path
    namespace: str
    cgroup_parent: str
    events: EventsServer
    events_address: str
    grpc_address: str
    rootfs_source: Path
    shim_pids: set[int] = field(default_factory=set)
    clients: list[Any] = field(default_factory=list)

    @property
    def runc_root(self) -> str:
        return str(self.root / "runc")

    @property
    def socket_dir(self) -> str:
        return str(self.root / "s")

    def unique_id(self, prefix: str = "c") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def bundle(self, id: str, args: list[str], **kw: Any) -> str:
        b = self.root / "bundles" / id
        (b / "rootfs").mkdir(parents=True)
        spec = busybox_spec(args, cgroups_path=f"/{self.cgroup_parent}/{id}", **kw)
        (b / "config.json").write_text(json.dumps(spec))
        return str(b)

    def fifo(self, name: str) -> str:
        path = self.root / "fifos" / name
        path.parent.mkdir(exist_ok=True)
        os.mkfifo(path)
        return str(path)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MAX_SHIM_VERSION", None)
        env.update(
            PYTHONPATH=SRC,
            TTRPC_ADDRESS=self.events_address,
            ARUN_SHIM_SOCKET_DIR=self.socket_dir,
            ARUN_SHIM_RUNC_ROOT=self.runc_root,
        )
        env.update(extra)
        return env

    def shim_command(self, id: str, action: str, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "arun.shim",
            "-namespace",
            self.namespace,
            "-address",
            self.grpc_address,
            "-publish-binary",
            "/bin/true",
            "-id",
            id,
            *extra,
            action,
        ]

    async def run_shim(
        self, bundle: str, id: str, action: str, *extra: str, stdin: bytes = b"", **env: str
    ) -> subprocess.CompletedProcess[bytes]:
        cmd = self.shim_command(id, action, *extra)
        proc = await asyncio.to_thread(
            subprocess.run, cmd, cwd=bundle, input=stdin, capture_output=True, env=self.env(**env), timeout=30
        )
        return proc

    async def start_shim(self, bundle: str, id: str) -> str:
        proc = await self.run_shim(bundle, id, "start")
        assert proc.returncode == 0, proc.stderr.decode()
        address = proc.stdout.decode()
        assert address.startswith("unix://"), proc.stdout
        with contextlib.suppress(FileNotFoundError, ValueError):
            self.shim_pids.add(int((Path(bundle) / "shim.pid").read_text()))
        return address

    async def connect(self, address: str, version: int = 2) -> Any:
        from arun.errdefs import grpc as errgrpc
        from arun.ttrpc import Client, ServiceStub

        client = await Client.connect(address, timeout=10, from_status=errgrpc.from_code)
        self.clients.append(client)
        if version == 2:
            from arun.api.containerd.runtime.task.v2 import shim_pb2
        else:
            from arun.api.containerd.runtime.task.v3 import shim_pb2  # noqa: F401
        return ServiceStub(client, f"containerd.task.v{version}.Task")


def _runc(root: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runc", "--root", root, *args], capture_output=True, text=True, timeout=30)


def _cleanup(env: ShimEnv) -> None:
    for pid in env.shim_pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    ns_root = os.path.join(env.runc_root, env.namespace)
    if os.path.isdir(ns_root):
        listed = _runc(ns_root, "list", "--format", "json")
        for c in json.loads(listed.stdout or "null") or []:
            _runc(ns_root, "delete", "--force", c["id"])
    prefix = str(env.root) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    deadline = time.monotonic() + 5
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        parent = os.path.join("/sys/fs/cgroup", hierarchy, env.cgroup_parent)
        if not os.path.isdir(parent):
            continue
        for child in os.listdir(parent):
            path = os.path.join(parent, child)
            if os.path.isdir(path):
                while True:
                    try:
                        os.rmdir(path)
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.rmdir(parent)
    shutil.rmtree(env.root, ignore_errors=True)


@pytest.fixture
async def shim_env() -> AsyncIterator[ShimEnv]:
    from arun.api.containerd.services.ttrpc.events.v1 import events_pb2  # noqa: F401
    from arun.ttrpc import Server

    root = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    tag = uuid.uuid4().hex[:8]
    rootfs = root / "busybox"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    events = EventsServer()
    server = Server()
    server.register("containerd.services.events.ttrpc.v1.Events", events)
    events_address = str(root / "ev.sock")
    await server.serve_unix(events_address)
    env = ShimEnv(
        root=root,
        namespace=f"shimtest-{tag}",
        cgroup_parent=f"arun-shim-test-{tag}",
        events=events,
        events_address=events_address,
        grpc_address=str(root / "fake-grpc.sock"),
        rootfs_source=rootfs,
    )
    try:
        yield env
    finally:
        for client in env.clients:
            with contextlib.suppress(Exception):
                await client.close()
        await server.close()
        await asyncio.to_thread(_cleanup, env)


async def wait_gone(pid: int) -> None:
    """Wait (up to 10 s) until ``pid`` has exited."""
    for _ in range(200):
        if not pid_alive(pid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"process {pid} is still running")


def exists(path: str) -> bool:
    return os.path.exists(path)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
