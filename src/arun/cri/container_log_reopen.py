"""ReopenContainerLog: a new log file at the container's log path (kubelet rotated the old one)."""

from __future__ import annotations

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.errdefs import FailedPreconditionError


async def reopen_container_log(
    c: CRIService, req: api_pb2.ReopenContainerLogRequest
) -> api_pb2.ReopenContainerLogResponse:
    container = c.containers.get(req.container_id)
    if container.status.get().state() != api_pb2.CONTAINER_RUNNING or container.io is None:
        raise FailedPreconditionError("container is not running")
    try:
        container.io.reopen_log()
    except OSError as e:
        raise FailedPreconditionError(f"failed to reopen the log of container {container.id!r}: {e}") from e
    return api_pb2.ReopenContainerLogResponse()
