"""Recovery after a daemon restart: the CRI's sandboxes and containers rebuilt from their
container records (the CRI metadata extensions), their status files and the tasks the
runtime manager reconnected to.

* A sandbox whose pause task runs is READY again (its exit watched); otherwise NOTREADY.
* A container whose task runs is RUNNING again: its FIFOs are reopened (its shim still holds
  them) so logging and attach resume, and its exit is watched. A task that exited while the
  daemon was down is reaped now. A container that was running but has no task any more
  exited with an unknown status (255, reason ``Unknown``).
* Names are reserved again, so kubelet's next RunPodSandbox/CreateContainer sees them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from typing import Any

from arun.api.cri.runtime.v1 import api_pb2
from arun.core.runtime import Exit, Status
from arun.cri import util
from arun.cri.criservice import UNKNOWN_EXIT_CODE, CRIService
from arun.cri.io.container_io import ContainerIO
from arun.cri.store.container import Container, ContainerMetadata, ContainerStatus, StatusFile
from arun.cri.store.sandbox import Sandbox, SandboxMetadata, SandboxState
from arun.errdefs import NotFoundError

log = logging.getLogger(__name__)

REASON_UNKNOWN = "Unknown"


async def recover(c: CRIService) -> None:
    records = await c.meta.containers.list()
    sandboxes = [r for r in records if r.labels.get(util.LABEL_KIND) == util.KIND_SANDBOX]
    containers = [r for r in records if r.labels.get(util.LABEL_KIND) == util.KIND_CONTAINER]
    await asyncio.gather(*(_sandbox(c, r) for r in sandboxes))
    await asyncio.gather(*(_container(c, r) for r in containers))
    if sandboxes or containers:
        log.info("recovered %d sandboxes and %d containers", len(sandboxes), len(containers))


def _spec(record: Any) -> dict[str, Any] | None:
    if record.spec is None:
        return None
    try:
        doc: dict[str, Any] = json.loads(record.spec.value)
        return doc
    except ValueError:
        return None


async def _task(c: CRIService, id: str) -> Any:
    try:
        return await c.runtime.get(id)
    except NotFoundError:
        return None


async def _sandbox(c: CRIService, record: Any) -> None:
    ext = record.extensions.get(util.EXT_SANDBOX_METADATA)
    if ext is None:
        log.warning("sandbox record %s has no CRI metadata; skipped", record.id)
        return
    try:
        md = SandboxMetadata.from_json(ext.value)
    except (ValueError, KeyError) as e:
        log.warning("sandbox record %s has unreadable CRI metadata (%s); skipped", record.id, e)
        return
    if md.netns_path and not md.ip:
        cached = c.network.cached_result(md.id)
        if cached is not None:
            md.ip, md.additional_ips = cached.pod_ips(c.config.cni.ip_pref or "ipv4")
            md.cni_result = cached.to_json()
    sb = Sandbox(md)
    sb.spec = _spec(record)
    sb.shm_path = str(c.sandbox_state(md.id) / "shm")
    ns = md.config.linux.security_context.namespace_options
    if ns.ipc == api_pb2.NODE:
        sb.shm_path = "/dev/shm"
    task = await _task(c, md.id)
    state = None
    if task is not None:
        try:
            state = await task.state()
        except Exception as e:
            log.info("state of sandbox %s: %s", md.id, e)
    if task is not None and state is not None and state.status in (Status.RUNNING, Status.PAUSED):
        sb.task = task
        sb.pid = state.pid
        sb.state = SandboxState.READY
    else:
        if task is not None:
            try:
                await c.runtime.delete(md.id)
            except Exception as e:
                log.info("deleting the stopped pause task of %s: %s", md.id, e)
        sb.state = SandboxState.NOTREADY
        sb.stopped.set()
    c.sandboxes.add(sb)
    c.sandboxes.names.reserve(md.name, md.id)
    if sb.task is not None:
        c.monitor_sandbox(sb)


async def _container(c: CRIService, record: Any) -> None:
    ext = record.extensions.get(util.EXT_CONTAINER_METADATA)
    if ext is None:
        log.warning("container record %s has no CRI metadata; skipped", record.id)
        return
    try:
        md = ContainerMetadata.from_json(ext.value)
    except (ValueError, KeyError) as e:
        log.warning("container record %s has unreadable CRI metadata (%s); skipped", record.id, e)
        return
    root = c.container_root(md.id)
    try:
        status = await asyncio.to_thread(StatusFile.load, root)
    except (OSError, ValueError) as e:
        log.warning("status of container %s unreadable (%s): reported as unknown", md.id, e)
        root.mkdir(parents=True, exist_ok=True)
        status = await asyncio.to_thread(StatusFile.create, root, ContainerStatus(created_at=util.now_ns()))
        status.update(unknown=True)
    container = Container(md, status)
    container.spec = _spec(record)
    task = await _task(c, md.id)
    st = status.get()
    if task is not None:
        try:
            tstate = await task.state()
        except Exception as e:
            log.info("state of container %s: %s", md.id, e)
            tstate = None
        container.task = task
        if tstate is not None and tstate.status in (Status.RUNNING, Status.PAUSED):
            cfg = md.config
            io = ContainerIO(
                md.id,
                c.container_state(md.id) / "io",
                stdin=cfg.stdin,
                stdin_once=cfg.stdin_once,
                tty=cfg.tty,
                log_path=md.log_path,
                max_line_size=c.config.max_container_log_line_size,
                reuse=True,
            )
            try:
                await io.open()
                io.opened_by_shim()

                async def close_stdin() -> None:
                    await task.close_io()

                io.close_stdin = close_stdin
                container.io = io
            except OSError as e:
                log.warning("cannot reopen the stdio of container %s: %s", md.id, e)
                io.close()
            if not st.started_at:
                status.update(started_at=util.now_ns(), pid=tstate.pid)
            c.containers.add(container)
            c.containers.names.reserve(md.name, md.id)
            c.monitor_container(container)
            return
        if tstate is not None and tstate.status == Status.CREATED and not st.started_at:
            # Created by a StartContainer the restart interrupted: drop the task, the container
            # stays CREATED and may be started again.
            try:
                await c.runtime.delete(md.id)
            except Exception as e:
                log.info("deleting the unstarted task of %s: %s", md.id, e)
            container.task = None
        else:
            exit_status = tstate.exit_status if tstate is not None else UNKNOWN_EXIT_CODE
            exited_at = tstate.exited_at if tstate is not None else None
            c.containers.add(container)
            c.containers.names.reserve(md.name, md.id)
            await c.handle_container_exit(container, Exit(0, exit_status, exited_at))
            return
    elif st.started_at and not st.finished_at:
        status.update(finished_at=util.now_ns(), exit_code=UNKNOWN_EXIT_CODE, reason=REASON_UNKNOWN, pid=0)
    if container.status.get().finished_at:
        container.stopped.set()
    # Leftover exec FIFOs of the previous run.
    for d in (c.container_state(md.id) / "io").glob("exec-*"):
        shutil.rmtree(d, ignore_errors=True)
    c.containers.add(container)
    c.containers.names.reserve(md.name, md.id)
