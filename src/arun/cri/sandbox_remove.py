"""RemovePodSandbox: stopped first if it is not, then every container of the pod removed, the
pause task, container record, snapshot, files and name gone. Idempotent."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.container_remove import remove as remove_container
from arun.cri.criservice import CRIService
from arun.cri.sandbox_run import cleanup_files
from arun.cri.sandbox_stop import stop
from arun.cri.store.sandbox import Sandbox
from arun.errdefs import NotFoundError

log = logging.getLogger(__name__)


async def remove_pod_sandbox(
    c: CRIService, req: api_pb2.RemovePodSandboxRequest
) -> api_pb2.RemovePodSandboxResponse:
    sb = c.sandboxes.find(req.pod_sandbox_id)
    if sb is None:
        return api_pb2.RemovePodSandboxResponse()
    await c.detached(lambda: remove(c, sb), f"rmp-{sb.id[:12]}")
    return api_pb2.RemovePodSandboxResponse()


async def remove(c: CRIService, sb: Sandbox) -> None:
    await stop(c, sb)
    for x in c.containers.by_sandbox(sb.id):
        await remove_container(c, x)
    if c.sandboxes.find(sb.id) is not sb:
        return
    sb.removing = True
    async with sb.lock:
        if sb.task is not None:
            with contextlib.suppress(NotFoundError):
                await c.runtime.delete(sb.id)
            sb.task = None
    try:
        record = await c.meta.containers.get(sb.id)
    except NotFoundError:
        record = None
    if record is not None:
        await c.meta.containers.delete(sb.id)
        if record.snapshotter and record.snapshot_key:
            with contextlib.suppress(NotFoundError):
                await c.meta.snapshotter(record.snapshotter).remove(record.snapshot_key)
    await asyncio.to_thread(cleanup_files, c, sb.id)
    c.sandboxes.delete(sb.id)
    c.sandboxes.names.release_by_key(sb.id)
    c.emit(sb.id, sb.id, api_pb2.CONTAINER_DELETED_EVENT)
