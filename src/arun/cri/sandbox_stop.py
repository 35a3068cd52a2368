"""StopPodSandbox: every container of the pod killed, the pause container stopped, the pod's
network torn down and its namespace removed, /dev/shm unmounted. Idempotent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.container_stop import stop as stop_container
from arun.cri.criservice import CRIService
from arun.cri.sandbox_run import network_request
from arun.cri.store.sandbox import Sandbox, SandboxState
from arun.errdefs import NotFoundError, UnavailableError
from arun.mount import LinuxMounter, is_mountpoint

log = logging.getLogger(__name__)

KILL_TIMEOUT = 30.0


async def stop_pod_sandbox(
    c: CRIService, req: api_pb2.StopPodSandboxRequest
) -> api_pb2.StopPodSandboxResponse:
    sb = c.sandboxes.find(req.pod_sandbox_id)
    if sb is None:
        return api_pb2.StopPodSandboxResponse()
    await c.detached(lambda: stop(c, sb), f"stopp-{sb.id[:12]}")
    return api_pb2.StopPodSandboxResponse()


async def stop(c: CRIService, sb: Sandbox) -> None:
    containers = c.containers.by_sandbox(sb.id)
    if containers:
        await asyncio.gather(*(stop_container(c, x, 0) for x in containers))
    async with sb.lock:
        task = sb.task
    if task is not None and sb.state == SandboxState.READY:
        try:
            await task.kill(signal.SIGKILL, all=True)
        except (NotFoundError, UnavailableError):
            pass
        try:
            await asyncio.wait_for(sb.stopped.wait(), KILL_TIMEOUT)
        except TimeoutError:
            raise UnavailableError(f"sandbox {sb.id!r}: pause container did not exit after SIGKILL") from None
    elif sb.state == SandboxState.READY:
        sb.mark_exited(0, 0)
    await asyncio.to_thread(_unmount_shm, c, sb.id)
    await teardown_network(c, sb)


def _unmount_shm(c: CRIService, sid: str) -> None:
    shm = c.sandbox_state(sid) / "shm"
    with contextlib.suppress(OSError):
        while is_mountpoint(str(shm)):
            LinuxMounter().unmount(str(shm), 2)


async def teardown_network(c: CRIService, sb: Sandbox) -> None:
    md = sb.metadata
    nsopts = md.config.linux.security_context.namespace_options
    if nsopts.network == api_pb2.NODE or not md.netns_path:
        return
    await c.network.destroy(network_request(sb.id, md.config, md.config.linux.cgroup_parent), md.netns_path)
