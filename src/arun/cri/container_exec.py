"""Exec processes in a running container: ExecSync (buffered, with a timeout), and the
streaming runtime behind Exec/Attach/PortForward URLs (:class:`StreamingRuntime`).

An exec gets its own FIFOs next to the container's, its process spec is the
container's with the command (and the terminal) replaced, and it is deleted from
the shim when it ends. A timeout or a cancelled client kills it (SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import secrets
import signal
import time
from collections.abc import Callable, Sequence

from arun.api.cri.runtime.v1 import api_pb2
from arun.core import typeurl
from arun.core.runtime import PROCESS_TYPE_URL, ExecOpts, Process
from arun.cri.criservice import CRIService
from arun.cri.io.fifo import FifoReader, FifoWriter, new_fifo_set
from arun.cri.store.container import Container
from arun.cri.store.sandbox import SandboxState
from arun.cri.streaming import DuplexStream, InputStream, OutputStream, ResizeEvents, netns
from arun.errdefs import DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, NotFoundError

log = logging.getLogger(__name__)

# ExecSync output beyond this is dropped (kubelet reads at most this much).
MAX_EXEC_SYNC_OUTPUT = 16 * 1024 * 1024
# How long to wait for an exec's output after its process exited.
DRAIN_TIMEOUT = 2.0


class _Buffer:
    """An OutputStream collecting bytes (up to a limit)."""

    def __init__(self, limit: int = MAX_EXEC_SYNC_OUTPUT) -> None:
        self.data = bytearray()
        self.limit = limit

    async def write(self, data: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += data[:room]

    async def close(self) -> None:
        return None


def running_container(c: CRIService, id: str) -> Container:
    container = c.containers.get(id)
    st = container.status.get()
    if st.state() != api_pb2.CONTAINER_RUNNING or container.task is None:
        raise FailedPreconditionError(
            f"container {container.id!r} is not running (state: {api_pb2.ContainerState.Name(st.state())})"
        )
    return container


async def exec_process(
    c: CRIService,
    container: Container,
    cmd: Sequence[str],
    *,
    stdin: InputStream | None,
    stdout: OutputStream | None,
    stderr: OutputStream | None,
    tty: bool,
    resize: ResizeEvents | None = None,
    limit: float | None = None,
) -> int:
    """Run ``cmd`` in ``container``; its exit code. DeadlineExceededError after ``limit`` seconds."""
    if not cmd:
        raise InvalidArgumentError("exec command must not be empty")
    task = container.task
    if task is None:
        raise FailedPreconditionError(f"container {container.id!r} is not running")
    spec = container.spec or {}
    process = copy.deepcopy(spec.get("process") or {})
    process["args"] = list(cmd)
    process["terminal"] = tty
    process.pop("consoleSize", None)
    if tty:
        env = [e for e in process.get("env", []) if not e.startswith("TERM=")]
        process["env"] = [*env, "TERM=xterm"]
    exec_id = secrets.token_hex(16)
    fifos = new_fifo_set(
        c.container_state(container.id) / "io" / f"exec-{exec_id[:12]}",
        exec_id,
        stdin=stdin is not None,
        stdout=stdout is not None or (stderr is not None and tty),
        stderr=stderr is not None,
        terminal=tty,
    )
    loop = asyncio.get_running_loop()
    queues: list[tuple[asyncio.Queue[bytes | None], OutputStream]] = []
    readers: list[FifoReader] = []
    writer: FifoWriter | None = None
    senders: list[asyncio.Task[None]] = []

    async def send(q: asyncio.Queue[bytes | None], out: OutputStream) -> None:
        broken = False
        while True:
            chunk = await q.get()
            if chunk is None:
                return
            if broken:
                continue
            try:
                await out.write(chunk)
            except (BrokenPipeError, ConnectionError, OSError):
                broken = True

    proc = None
    try:
        for path, out in ((fifos.stdout, stdout), (fifos.stderr, stderr)):
            if not path or out is None:
                continue
            q: asyncio.Queue[bytes | None] = asyncio.Queue()
            reader = FifoReader(path, q.put_nowait)
            readers.append(reader)
            await reader.start()
            reader.done.add_done_callback(_ender(q))
            queues.append((q, out))
            senders.append(loop.create_task(send(q, out)))
        if fifos.stdin:
            writer = FifoWriter(fifos.stdin)
        opts = ExecOpts(spec=typeurl.Any(PROCESS_TYPE_URL, json.dumps(process).encode()), io=fifos.io())
        proc = await task.exec(exec_id, opts)
        await proc.start()
        # The shim opens an exec's FIFOs when it starts the process: EOF is real from now on.
        for r in readers:
            r.release()
        aux: list[asyncio.Task[None]] = []
        if stdin is not None and writer is not None:
            aux.append(loop.create_task(_copy_stdin(stdin, writer, proc)))
        if resize is not None and tty:
            aux.append(loop.create_task(_resize(resize, proc)))
        try:
            try:
                async with asyncio.timeout(limit):
                    exit = await proc.wait()
            except TimeoutError:
                with contextlib.suppress(Exception):
                    await proc.kill(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 10)
                raise DeadlineExceededError(f"timeout {limit}s exceeded running {list(cmd)!r}") from None
        finally:
            for t in aux:
                t.cancel()
            for t in aux:
                with contextlib.suppress(BaseException):
                    await t
        if readers:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(asyncio.shield(r.done) for r in readers)), DRAIN_TIMEOUT
                )
            except TimeoutError:
                log.debug("output of exec %s in %s not drained", exec_id, container.id)
        for t in senders:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(t), DRAIN_TIMEOUT)
        return int(exit.status)
    except asyncio.CancelledError:
        if proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.kill(signal.SIGKILL))
        raise
    finally:
        if proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.delete())
        for r in readers:
            r.close()
        for t in senders:
            t.cancel()
        if writer is not None:
            writer.close()
        fifos.remove()


def _ender(q: asyncio.Queue[bytes | None]) -> Callable[[asyncio.Future[None]], None]:
    def end(_: asyncio.Future[None]) -> None:
        q.put_nowait(None)

    return end


async def _copy_stdin(stdin: InputStream, writer: FifoWriter, proc: Process) -> None:
    try:
        while True:
            data = await stdin.read(32 * 1024)
            if not data:
                break
            await writer.write(data)
    except (BrokenPipeError, ConnectionError, OSError):
        pass
    writer.close()
    with contextlib.suppress(Exception):
        await proc.close_io()


async def _resize(resize: ResizeEvents, proc: Process) -> None:
    async for size in resize:
        with contextlib.suppress(Exception):
            await proc.resize_pty(size.width, size.height)


async def exec_sync(c: CRIService, req: api_pb2.ExecSyncRequest) -> api_pb2.ExecSyncResponse:
    container = running_container(c, req.container_id)
    out, err = _Buffer(), _Buffer()
    limit = float(req.timeout) if req.timeout > 0 else None
    start = time.monotonic()
    code = await exec_process(
        c, container, list(req.cmd), stdin=None, stdout=out, stderr=err, tty=False, limit=limit
    )
    log.debug("exec in %s took %.3fs", container.id, time.monotonic() - start)
    return api_pb2.ExecSyncResponse(stdout=bytes(out.data), stderr=bytes(err.data), exit_code=code)


class CRIStreamingRuntime:
    """:class:`arun.cri.streaming.StreamingRuntime` over the CRI service."""

    def __init__(self, c: CRIService) -> None:
        self.c = c

    async def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        stdin: InputStream | None,
        stdout: OutputStream | None,
        stderr: OutputStream | None,
        tty: bool,
        resize: ResizeEvents | None,
    ) -> int:
        from arun import namespaces
        from arun.cri.constants import K8S_NAMESPACE

        with namespaces.use(K8S_NAMESPACE):
            container = running_container(self.c, container_id)
            return await exec_process(
                self.c, container, cmd, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty, resize=resize
            )

    async def attach(
        self,
        container_id: str,
        stdin: InputStream | None,
        stdout: OutputStream | None,
        stderr: OutputStream | None,
        tty: bool,
        resize: ResizeEvents | None,
    ) -> None:
        from arun import namespaces
        from arun.cri.constants import K8S_NAMESPACE

        with namespaces.use(K8S_NAMESPACE):
            container = running_container(self.c, container_id)
            io = container.io
            if io is None:
                raise FailedPreconditionError(f"container {container_id!r} has no stdio to attach to")
            task = container.task
            resizer = None
            if resize is not None and tty and task is not None:
                resizer = asyncio.get_running_loop().create_task(_resize(resize, task))
            try:
                await io.attach(stdin, stdout, stderr)
            finally:
                if resizer is not None:
                    resizer.cancel()
                    with contextlib.suppress(BaseException):
                        await resizer

    async def port_forward(self, pod_sandbox_id: str, port: int, stream: DuplexStream) -> None:
        sb = self.c.sandboxes.get(pod_sandbox_id)
        if sb.state != SandboxState.READY:
            raise FailedPreconditionError(f"sandbox {pod_sandbox_id!r} is not running")
        nsopts = sb.config.linux.security_context.namespace_options
        path = None if nsopts.network == api_pb2.NODE else sb.metadata.netns_path
        if nsopts.network != api_pb2.NODE and not path:
            raise NotFoundError(f"sandbox {pod_sandbox_id!r} has no network namespace")
        await netns.port_forward(path, port, stream)
