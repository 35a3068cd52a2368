"""StartContainer: the container's task in its pod's shim, its stdio and its log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from arun.api.cri.runtime.v1 import api_pb2
from arun.core.runtime import CreateOpts
from arun.cri import util
from arun.cri.criservice import CRIService
from arun.cri.io.container_io import ContainerIO
from arun.cri.sandbox_run import create_task
from arun.cri.store.container import Container
from arun.cri.store.sandbox import SandboxState
from arun.errdefs import FailedPreconditionError

log = logging.getLogger(__name__)

# containerd's values for a container whose start failed.
START_ERROR_EXIT_CODE = 128
START_ERROR_REASON = "StartError"


async def start_container(
    c: CRIService, req: api_pb2.StartContainerRequest
) -> api_pb2.StartContainerResponse:
    container = c.containers.get(req.container_id)

    async def work() -> None:
        async with container.lock:
            await _start(c, container)

    await c.detached(work, f"start-{container.id[:12]}")
    return api_pb2.StartContainerResponse()


async def _start(c: CRIService, container: Container) -> None:
    st = container.status.get()
    if st.state() != api_pb2.CONTAINER_CREATED:
        raise FailedPreconditionError(
            f"container {container.id!r} is in {api_pb2.ContainerState.Name(st.state())} state, not created"
        )
    if st.removing:
        raise FailedPreconditionError(f"container {container.id!r} is being removed")
    sb = c.sandboxes.find(container.sandbox_id)
    if sb is None or sb.state != SandboxState.READY:
        raise FailedPreconditionError(
            f"sandbox {container.sandbox_id!r} of container {container.id!r} is not running"
        )
    container.status.update(starting=True)
    cfg = container.config
    io: ContainerIO | None = None
    task = None
    try:
        rt = c.config.runtime(container.metadata.runtime_handler)
        io = ContainerIO(
            container.id,
            c.container_state(container.id) / "io",
            stdin=cfg.stdin,
            stdin_once=cfg.stdin_once,
            tty=cfg.tty,
            log_path=container.metadata.log_path,
            max_line_size=c.config.max_container_log_line_size,
        )
        await io.open()
        mounts = container.rootfs
        if mounts is None or container.spec is None:
            record = await c.meta.containers.get(container.id)
            mounts = await c.meta.snapshotter(record.snapshotter).mounts(record.snapshot_key)
            if container.spec is None and record.spec is not None:
                container.spec = json.loads(record.spec.value)
        spec_bytes = json.dumps(container.spec).encode()
        task = await create_task(
            c,
            container.id,
            sb.id,
            sb.metadata.config,
            CreateOpts(
                spec=spec_bytes,
                rootfs=mounts,
                io=io.io,
                runtime=util.runtime_name(rt),
                runtime_options=util.runtime_options(rt),
            ),
        )
        io.opened_by_shim()
        created_task = task

        async def close_stdin() -> None:
            await created_task.close_io()

        io.close_stdin = close_stdin
        container.task = task
        container.io = io
        pid = await task.start()
    except BaseException as e:
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(_drop_task(c, container.id, task))
        container.task = None
        container.io = None
        if io is not None:
            io.close()
        msg = getattr(e, "message", None) or str(e)
        await asyncio.to_thread(
            container.status.update,
            starting=False,
            finished_at=util.now_ns(),
            exit_code=START_ERROR_EXIT_CODE,
            reason=START_ERROR_REASON,
            message=msg,
        )
        container.stopped.set()
        raise
    container.status.update(pid=pid, started_at=util.now_ns(), starting=False)
    c.monitor_container(container)
    c.emit(container.id, container.sandbox_id, api_pb2.CONTAINER_STARTED_EVENT)


async def _drop_task(c: CRIService, id: str, task: object) -> None:
    kill = getattr(task, "kill", None)
    if kill is not None:
        with contextlib.suppress(Exception):
            await kill(9, all=True)
    with contextlib.suppress(Exception):
        await c.runtime.delete(id)
