"""RemoveContainer: stop it if it runs, then remove its record, snapshot, files and name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.container_create import release_image_volumes
from arun.cri.container_stop import stop
from arun.cri.criservice import CRIService
from arun.cri.store.container import Container
from arun.errdefs import FailedPreconditionError, NotFoundError

log = logging.getLogger(__name__)


async def remove_container(
    c: CRIService, req: api_pb2.RemoveContainerRequest
) -> api_pb2.RemoveContainerResponse:
    container = c.containers.find(req.container_id)
    if container is None:
        return api_pb2.RemoveContainerResponse()
    await c.detached(lambda: remove(c, container), f"rm-{container.id[:12]}")
    return api_pb2.RemoveContainerResponse()


async def remove(c: CRIService, container: Container) -> None:
    st = container.status.get()
    if st.state() in (api_pb2.CONTAINER_RUNNING, api_pb2.CONTAINER_UNKNOWN) or st.starting:
        await stop(c, container, 0)
    if c.containers.find(container.id) is not container:
        return  # removed meanwhile by a concurrent call
    if container.status.get().removing:
        # Another RemoveContainer is at work: wait for it.
        for _ in range(600):
            if c.containers.find(container.id) is None:
                return
            await asyncio.sleep(0.05)
        raise FailedPreconditionError(f"container {container.id!r} is being removed")
    container.status.update(removing=True)
    try:
        if container.task is not None:
            with contextlib.suppress(NotFoundError):
                await c.runtime.delete(container.id)
            container.task = None
        if container.io is not None:
            container.io.close()
            container.io = None
        try:
            record = await c.meta.containers.get(container.id)
        except NotFoundError:
            record = None
        if record is not None:
            await c.meta.containers.delete(container.id)
            if record.snapshotter and record.snapshot_key:
                with contextlib.suppress(NotFoundError):
                    await c.meta.snapshotter(record.snapshotter).remove(record.snapshot_key)
        sn = (
            record.snapshotter
            if record is not None
            else c.snapshotter_for(container.metadata.runtime_handler)
        )
        await release_image_volumes(c, container.id, sn)
        await asyncio.to_thread(shutil.rmtree, c.container_root(container.id), True)
        await asyncio.to_thread(shutil.rmtree, c.container_state(container.id), True)
    except BaseException:
        container.status.update(removing=False)
        raise
    c.containers.delete(container.id)
    c.containers.names.release_by_key(container.id)
    c.emit(container.id, container.sandbox_id, api_pb2.CONTAINER_DELETED_EVENT)
