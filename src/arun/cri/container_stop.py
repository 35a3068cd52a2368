"""StopContainer: the stop signal, then SIGKILL once the timeout has passed."""

from __future__ import annotations

import asyncio
import logging
import signal

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri import util
from arun.cri.criservice import CRIService
from arun.cri.store.container import Container
from arun.errdefs import NotFoundError, UnavailableError

log = logging.getLogger(__name__)

# How long to wait for the exit after SIGKILL before giving up.
KILL_TIMEOUT = 30.0


async def stop_container(c: CRIService, req: api_pb2.StopContainerRequest) -> api_pb2.StopContainerResponse:
    container = c.containers.find(req.container_id)
    if container is None:
        return api_pb2.StopContainerResponse()
    await c.detached(lambda: stop(c, container, req.timeout), f"stop-{container.id[:12]}")
    return api_pb2.StopContainerResponse()


async def stop(c: CRIService, container: Container, grace: float) -> None:
    """Stop a running container and wait for its exit to be recorded (no-op otherwise)."""
    st = container.status.get()
    if st.state() != api_pb2.CONTAINER_RUNNING and not st.starting:
        return
    if st.starting:
        # StartContainer holds the lock until the task runs.
        async with container.lock:
            pass
        if container.status.get().state() != api_pb2.CONTAINER_RUNNING:
            return
    task = container.task
    if task is None:
        await container.stopped.wait()
        return
    if grace > 0:
        sig = util.parse_signal(container.metadata.stop_signal) or signal.SIGTERM
        try:
            await task.kill(int(sig))
        except (NotFoundError, UnavailableError):
            pass
        try:
            await asyncio.wait_for(container.stopped.wait(), grace)
            return
        except TimeoutError:
            log.info(
                "container %s did not stop %ss after %s; killing it",
                container.id,
                grace,
                util.signal_name(int(sig)),
            )
    try:
        await task.kill(signal.SIGKILL, all=True)
    except (NotFoundError, UnavailableError):
        pass
    try:
        await asyncio.wait_for(container.stopped.wait(), KILL_TIMEOUT)
    except TimeoutError:
        raise UnavailableError(f"container {container.id!r} did not exit after SIGKILL") from None
