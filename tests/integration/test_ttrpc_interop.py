"""arun's ttrpc against the real Go peers: Debian's containerd-shim-runc-v2 (containerd 1.6).

arun's Client starts the shim through its ``start`` command, connects to the address it
prints and drives ``containerd.task.v2.Task`` on a busybox bundle; the shim's events arrive
at an arun Server implementing ``containerd.services.events.ttrpc.v1.Events/Forward``
(given to the shim as ``TTRPC_ADDRESS``). Everything lives under a fresh temporary
directory, with a unique namespace, container id, runc root and cgroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf import any_pb2, empty_pb2

from arun.api.containerd.events import task_pb2 as events
from arun.api.containerd.runtime.task.v2 import shim_pb2
from arun.api.containerd.services.ttrpc.events.v1 import events_pb2
from arun.api.containerd.types import mount_pb2
from arun.api.containerd.types.runc.options import oci_pb2
from arun.ttrpc import Client, ClosedError, Server, ServiceStub, metadata, require_same_user

pytestmark = [pytest.mark.root, pytest.mark.runc, pytest.mark.integration, pytest.mark.asyncio]

SHIM = shutil.which("containerd-shim-runc-v2") or "/usr/bin/containerd-shim-runc-v2"
BUSYBOX = "/bin/busybox"
CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"]
STATUS_CREATED, STATUS_RUNNING, STATUS_STOPPED = 1, 2, 3


def _require_tools() -> None:
    missing = [p for p in (SHIM, BUSYBOX) if not os.access(p, os.X_OK)]
    if missing:
        if os.environ.get("ARUN_TEST_STRICT") == "1":
            pytest.fail(f"requirement missing under ARUN_TEST_STRICT=1: {missing}")
        pytest.skip(f"needs {missing}")


def process_spec(args: list[str]) -> dict[str, Any]:
    return {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/bin"],
        "cwd": "/",
        "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
        "noNewPrivileges": True,
    }


def oci_config(args: list[str], cgroup: str) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "process": process_spec(args),
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "arun",
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
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "cgroupsPath": cgroup,
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }


class FifoReader:
    """The test's end of a stdio FIFO, opened before the shim opens its end."""

    def __init__(self, path: str) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = b""

    async def read_until(self, needle: bytes, within: float = 10) -> bytes:
        deadline = time.monotonic() + within
        while needle not in self.data and time.monotonic() < deadline:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                chunk = b""
            if chunk:
                self.data += chunk
            else:
                await asyncio.sleep(0.02)
        return self.data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass
class EventSink:
    """containerd.services.events.ttrpc.v1.Events, as containerd serves it to shims."""

    envelopes: list[Any] = field(default_factory=list)
    namespaces: list[str | None] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def Forward(self, req: events_pb2.ForwardRequest) -> empty_pb2.Empty:
        self.envelopes.append(req.envelope)
        self.namespaces.append(metadata.current().first("containerd-namespace-ttrpc"))
        self.arrived.set()
        return empty_pb2.Empty()

    def topics(self) -> list[str]:
        return [e.topic for e in self.envelopes]

    async def wait_for(self, topic: str, count: int = 1, within: float = 15) -> None:
        deadline = time.monotonic() + within
        while self.topics().count(topic) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {topic} event; got {self.topics()}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    def decoded(self, topic: str, cls: Any) -> list[Any]:
        out = []
        for e in self.envelopes:
            if e.topic == topic:
                assert e.event.type_url == cls.DESCRIPTOR.full_name, e.event.type_url
                out.append(cls.FromString(e.event.value))
        return out


@dataclass
class Env:
    root: str
    bundle: str
    rootfs_src: str
    runc_root: str
    namespace: str
    id: str
    cgroup: str
    events_path: str
    grpc_address: str
    sink: EventSink
    server: Server
    shim_pid: int | None = None
    shim_address: str | None = None
    log_fd: int | None = None

    def shim_log(self) -> str:
        if self.log_fd is None:
            return ""
        out = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(self.log_fd, 65536):
                out += chunk
        return out.decode(errors="replace")

    def shim_args(self, *action: str) -> list[str]:
        return [
            SHIM,
            "-namespace",
            self.namespace,
            "-address",
            self.grpc_address,
            "-publish-binary",
            shutil.which("containerd") or "/usr/bin/containerd",
            "-id",
            self.id,
            *action,
        ]

    def shim_env(self) -> dict[str, str]:
        return {**os.environ, "TTRPC_ADDRESS": self.events_path, "NAMESPACE": self.namespace}


def _prepare(sink: EventSink, server: Server) -> tuple[Env, bool]:
    """Bundle, image directory and log FIFO under a fresh temporary directory."""
    tag = uuid.uuid4().hex[:10]
    root = tempfile.mkdtemp(prefix="arun-interop-")
    cid = f"c-{tag}"
    bundle = os.path.join(root, cid)
    rootfs_src = os.path.join(root, "image")
    os.makedirs(os.path.join(rootfs_src, "bin"))
    shutil.copy2(BUSYBOX, os.path.join(rootfs_src, "bin", "busybox"))
    os.symlink("busybox", os.path.join(rootfs_src, "bin", "sh"))
    os.makedirs(os.path.join(bundle, "rootfs"))
    cgroup = f"/arun-interop-{tag}"
    script = (
        "echo hello-from-arun; trap 'echo bye; exit 7' TERM; while true; do /bin/busybox sleep 0.05; done"
    )
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(oci_config(["/bin/busybox", "sh", "-c", script], cgroup), f)
    # containerd creates the shim's log FIFO before `start` and keeps reading it.
    log_path = os.path.join(bundle, "log")
    os.mkfifo(log_path, 0o700)
    log_fd = os.open(log_path, os.O_RDWR | os.O_NONBLOCK)
    created_socket_dir = not os.path.exists("/run/containerd/s")
    e = Env(
        root=root,
        bundle=bundle,
        rootfs_src=rootfs_src,
        runc_root=os.path.join(root, "runc"),
        namespace=f"arun-test-{tag}",
        id=cid,
        cgroup=cgroup,
        events_path=os.path.join(root, "events.sock"),
        grpc_address=os.path.join(root, "containerd.sock"),
        sink=sink,
        server=server,
        log_fd=log_fd,
    )
    return e, created_socket_dir


@pytest_asyncio.fixture
async def env() -> AsyncIterator[Env]:
    _require_tools()
    sink = EventSink()
    server = Server(peer_check=require_same_user)
    server.register(events_pb2.DESCRIPTOR.services_by_name["Events"], sink)
    e, created_socket_dir = await asyncio.to_thread(_prepare, sink, server)
    try:
        await server.serve_unix(e.events_path)
        yield e
    finally:
        await server.close()
        await asyncio.to_thread(_cleanup, e, created_socket_dir)


def _cleanup(e: Env, created_socket_dir: bool) -> None:
    # The shim's own `delete` is what containerd runs after a shim goes away: runc delete --force,
    # unmount rootfs. Then make sure of each piece ourselves.
    with contextlib.suppress(Exception):
        subprocess.run(
            e.shim_args("-bundle", e.bundle, "delete"),
            cwd=e.bundle,
            env=e.shim_env(),
            capture_output=True,
            timeout=30,
        )
    if e.shim_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(e.shim_pid, signal.SIGKILL)
    if e.shim_address is not None:  # a killed shim leaves its socket behind
        with contextlib.suppress(OSError):
            os.unlink(e.shim_address.removeprefix("unix://"))
    with contextlib.suppress(Exception):
        subprocess.run(
            ["runc", "--root", os.path.join(e.runc_root, e.namespace), "delete", "--force", e.id],
            capture_output=True,
            timeout=30,
        )
    rootfs = os.path.join(e.bundle, "rootfs")
    for _ in range(5):
        if not os.path.ismount(rootfs):
            break
        subprocess.run(["umount", "-l", rootfs], capture_output=True, check=False)
    for hierarchy in _cgroup_hierarchies():
        with contextlib.suppress(OSError):
            os.rmdir(hierarchy + e.cgroup)
    if e.log_fd is not None:
        os.close(e.log_fd)
    shutil.rmtree(e.root, ignore_errors=True)
    if created_socket_dir:
        for d in ("/run/containerd/s", "/run/containerd"):
            with contextlib.suppress(OSError):
                os.rmdir(d)  # only if we created it and it is empty


def _cgroup_hierarchies() -> list[str]:
    out = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            if parts[sep + 1] == "cgroup":
                out.append(parts[4])
    return out


async def start_shim(e: Env) -> str:
    proc = await asyncio.to_thread(
        subprocess.run,
        e.shim_args("start"),
        cwd=e.bundle,
        env=e.shim_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, f"shim start failed: {proc.stderr!r} {proc.stdout!r}\n{e.shim_log()}"
    out = proc.stdout.decode().strip()
    # containerd 1.6 prints the bare address; 1.7+ JSON, 2.3+ a BootstrapResult protobuf.
    if out.startswith("{"):
        out = json.loads(out)["address"]
    assert out.startswith("unix://"), out
    e.shim_address = out
    return out


def any_of(msg: Any, type_url: str | None = None) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url or msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


async def test_drive_the_runc_shim(env: Env) -> None:
    address = await start_shim(env)
    closed = asyncio.Event()
    client = await Client.connect(
        address,
        timeout=10,
        on_close=closed.set,
        metadata=lambda: [("containerd-namespace-ttrpc", env.namespace)],
    )
    task = ServiceStub(client, shim_pb2.DESCRIPTOR.services_by_name["Task"])
    # containerd hands a shim all of stdout and stderr (or none): the runc shim copies both.
    stdout = FifoReader(os.path.join(env.root, "init-stdout"))
    stderr = FifoReader(os.path.join(env.root, "init-stderr"))
    exec_out = FifoReader(os.path.join(env.root, "exec-stdout"))
    exec_err = FifoReader(os.path.join(env.root, "exec-stderr"))
    try:
        connected = await task.Connect(shim_pb2.ConnectRequest(id=env.id), timeout=10)
        env.shim_pid = connected.shim_pid
        assert connected.shim_pid > 0

        # Unknown methods and services are Unimplemented from the Go server too.
        from arun.ttrpc import StatusError

        with pytest.raises(StatusError) as info:
            await client.call("containerd.task.v2.Task", "NoSuchMethod", b"")
        assert (info.value.code, info.value.message) == (12, "method NoSuchMethod")
        with pytest.raises(StatusError) as info:
            await client.call("containerd.task.v9.Task", "State", b"")
        assert (info.value.code, info.value.message) == (12, "service containerd.task.v9.Task")

        created = await task.Create(
            shim_pb2.CreateTaskRequest(
                id=env.id,
                bundle=env.bundle,
                rootfs=[mount_pb2.Mount(type="bind", source=env.rootfs_src, options=["rbind", "rw"])],
                stdout=stdout.path,
                stderr=stderr.path,
                options=any_of(oci_pb2.Options(root=env.runc_root)),
            ),
            timeout=30,
        )
        assert created.pid > 0, env.shim_log()
        state = await task.State(shim_pb2.StateRequest(id=env.id), timeout=10)
        assert (state.id, state.pid, state.status, state.bundle) == (
            env.id,
            created.pid,
            STATUS_CREATED,
            env.bundle,
        )

        started = await task.Start(shim_pb2.StartRequest(id=env.id), timeout=30)
        assert started.pid == created.pid
        assert b"hello-from-arun" in await stdout.read_until(b"hello-from-arun")
        state = await task.State(shim_pb2.StateRequest(id=env.id), timeout=10)
        assert state.status == STATUS_RUNNING

        # Wait is a long-lived unary call: it stays pending while other calls go by.
        wait_init = asyncio.create_task(task.Wait(shim_pb2.WaitRequest(id=env.id)))

        spec = process_spec(["/bin/busybox", "sh", "-c", "echo from-exec; exit 3"])
        await task.Exec(
            shim_pb2.ExecProcessRequest(
                id=env.id,
                exec_id="exec1",
                stdout=exec_out.path,
                stderr=exec_err.path,
                spec=any_pb2.Any(
                    type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
                    value=json.dumps(spec).encode(),
                ),
            ),
            timeout=30,
        )
        exec_started = await task.Start(shim_pb2.StartRequest(id=env.id, exec_id="exec1"), timeout=30)
        assert exec_started.pid > 0
        exec_wait = await task.Wait(shim_pb2.WaitRequest(id=env.id, exec_id="exec1"), timeout=30)
        assert exec_wait.exit_status == 3
        assert b"from-exec" in await exec_out.read_until(b"from-exec")
        exec_state = await task.State(shim_pb2.StateRequest(id=env.id, exec_id="exec1"), timeout=10)
        assert (exec_state.status, exec_state.exit_status) == (STATUS_STOPPED, 3)
        await task.Delete(shim_pb2.DeleteRequest(id=env.id, exec_id="exec1"), timeout=30)

        pids = await task.Pids(shim_pb2.PidsRequest(id=env.id), timeout=10)
        assert created.pid in [p.pid for p in pids.processes]
        assert not wait_init.done()

        await task.Kill(shim_pb2.KillRequest(id=env.id, signal=signal.SIGTERM), timeout=10)
        waited = await asyncio.wait_for(wait_init, 30)
        assert waited.exit_status == 7
        assert waited.exited_at.seconds > 0
        assert b"bye" in await stdout.read_until(b"bye")

        deleted = await task.Delete(shim_pb2.DeleteRequest(id=env.id), timeout=30)
        assert (deleted.pid, deleted.exit_status) == (created.pid, 7)
        assert not await asyncio.to_thread(os.path.ismount, os.path.join(env.bundle, "rootfs"))

        # An error status from the Go side comes back with its code: the task is gone.
        with pytest.raises(StatusError) as info:
            await task.State(shim_pb2.StateRequest(id=env.id), timeout=10)
        assert info.value.code == 5  # NOT_FOUND

        await env.sink.wait_for("/tasks/delete")
        with contextlib.suppress(ClosedError):
            await task.Shutdown(shim_pb2.ShutdownRequest(id=env.id), timeout=10)
        await asyncio.wait_for(closed.wait(), 15)  # the shim exited: on_close fired
        with pytest.raises(ClosedError):
            await task.State(shim_pb2.StateRequest(id=env.id))
        for _ in range(100):
            try:
                os.kill(connected.shim_pid, 0)
            except ProcessLookupError:
                break
            except OSError as exc:  # pragma: no cover
                assert exc.errno != errno.ESRCH
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the shim did not exit after Shutdown")
    finally:
        for fifo in (stdout, stderr, exec_out, exec_err):
            fifo.close()
        await client.close()

    # The events, in order, in the test's namespace.
    sink = env.sink
    topics = sink.topics()
    init_order = [t for t in topics if t in ("/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete")]
    assert init_order[0] == "/tasks/create" and init_order[1] == "/tasks/start", topics
    assert "/tasks/exec-added" in topics and "/tasks/exec-started" in topics
    assert topics.index("/tasks/exec-added") < topics.index("/tasks/exec-started")
    assert topics.index("/tasks/start") < topics.index("/tasks/exit")
    assert topics[-1] == "/tasks/delete" or topics.index("/tasks/delete") > topics.index("/tasks/exit")
    assert all(e.namespace == env.namespace for e in sink.envelopes)
    assert set(sink.namespaces) == {env.namespace}  # the shim's client sends the ttrpc namespace header
    [create] = sink.decoded("/tasks/create", events.TaskCreate)
    assert (create.container_id, create.pid, create.bundle) == (env.id, created.pid, env.bundle)
    exits = sink.decoded("/tasks/exit", events.TaskExit)
    assert {(x.id, x.exit_status) for x in exits} == {("exec1", 3), (env.id, 7)}
    delete = [d for d in sink.decoded("/tasks/delete", events.TaskDelete) if not d.id or d.id == env.id]
    assert delete and delete[-1].exit_status == 7 and delete[-1].container_id == env.id
    assert stat.S_ISDIR(os.stat(env.root).st_mode)


# -- the edges, side by side with the Go server ---------------------------------------------------


class _NoTask:
    """containerd.task.v2.Task with no methods: every call is an unknown method to arun's server."""


async def _edge_answers(address: str) -> list[tuple[int, int, str]]:
    """Send what a well-behaved client never would; return (stream id, code, message) of each answer.

    1: a request announcing 4 MiB + 1 bytes (its bytes are sent, to be skipped);
    3: then a well-formed request for an unknown method (the connection must still work);
    4: an even (server-side) stream id;
    5: a payload that is not a ttrpc Request.
    """
    from arun.api.ttrpc import request_pb2
    from arun.ttrpc.frames import HEADER, MAX_DATA

    def frame(sid: int, data: bytes) -> bytes:
        return HEADER.pack(len(data), sid, 1, 0) + data

    def request(method: str) -> bytes:
        return request_pb2.Request(service="containerd.task.v2.Task", method=method).SerializeToString()

    reader, writer = await asyncio.open_unix_connection(address.removeprefix("unix://"))
    try:
        writer.write(HEADER.pack(MAX_DATA + 1, 1, 1, 0))
        writer.write(bytes(MAX_DATA + 1))
        writer.write(frame(3, request("NoSuchMethod")))
        writer.write(frame(4, request("State")))
        writer.write(frame(5, b"\xff\xff\xff"))
        await writer.drain()
        answers = []
        for _ in range(4):
            length, sid, type_, _flags = HEADER.unpack(await asyncio.wait_for(reader.readexactly(10), 10))
            body = await asyncio.wait_for(reader.readexactly(length), 10)
            assert type_ == 2, type_
            status = request_pb2.Response.FromString(body).status
            answers.append((sid, status.code, status.message))
        return sorted(answers)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_protocol_edges_answer_as_the_go_server_does(env: Env) -> None:
    """The same bad bytes to the Go shim's ttrpc server (containerd 1.6: ttrpc 1.1) and to
    arun's: the same stream ids get the same codes, and both connections live on."""
    address = await start_shim(env)
    async with await Client.connect(address, timeout=10) as client:
        task = ServiceStub(client, shim_pb2.DESCRIPTOR.services_by_name["Task"])
        env.shim_pid = (await task.Connect(shim_pb2.ConnectRequest(id=env.id), timeout=10)).shim_pid
    go = await _edge_answers(address)

    server = Server()
    server.register(shim_pb2.DESCRIPTOR.services_by_name["Task"], _NoTask())
    ours_path = os.path.join(env.root, "arun-task.sock")
    await server.serve_unix(ours_path)
    try:
        ours = await _edge_answers(ours_path)
    finally:
        await server.close()

    RESOURCE_EXHAUSTED, INVALID_ARGUMENT, UNIMPLEMENTED = 8, 3, 12
    expected = [(1, RESOURCE_EXHAUSTED), (3, UNIMPLEMENTED), (4, INVALID_ARGUMENT), (5, INVALID_ARGUMENT)]
    assert [(sid, code) for sid, code, _ in go] == expected, go
    assert [(sid, code) for sid, code, _ in ours] == expected, ours
    # The messages too, but for the decoder's own words after "unmarshal request error: ".
    assert go[:3] == ours[:3]
    assert go[3][2].startswith("unmarshal request error: ") and ours[3][2].startswith(
        "unmarshal request error: "
    )
