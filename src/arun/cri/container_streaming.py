"""Exec, Attach and PortForward: the URLs of the streaming server that serve them.

The checks that need the stores happen here, before a URL is handed out: the
container exists and runs (and for attach, has the stdio asked for), the pod is
ready.
"""

from __future__ import annotations

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.container_exec import running_container
from arun.cri.criservice import CRIService
from arun.cri.store.sandbox import SandboxState
from arun.errdefs import FailedPreconditionError, UnavailableError


def _server(c: CRIService):  # type: ignore[no-untyped-def]
    if c.streaming is None:
        raise UnavailableError("the streaming server is not running")
    return c.streaming


async def exec_url(c: CRIService, req: api_pb2.ExecRequest) -> api_pb2.ExecResponse:
    container = running_container(c, req.container_id)
    req.container_id = container.id
    resp: api_pb2.ExecResponse = _server(c).get_exec(req)
    return resp


async def attach_url(c: CRIService, req: api_pb2.AttachRequest) -> api_pb2.AttachResponse:
    container = running_container(c, req.container_id)
    req.container_id = container.id
    if req.stdin and not container.config.stdin:
        raise FailedPreconditionError(f"container {container.id!r} was not created with stdin")
    resp: api_pb2.AttachResponse = _server(c).get_attach(req)
    return resp


async def port_forward_url(c: CRIService, req: api_pb2.PortForwardRequest) -> api_pb2.PortForwardResponse:
    sb = c.sandboxes.get(req.pod_sandbox_id)
    if sb.state != SandboxState.READY:
        raise FailedPreconditionError(f"sandbox {sb.id!r} is not running")
    req.pod_sandbox_id = sb.id
    resp: api_pb2.PortForwardResponse = _server(c).get_port_forward(req)
    return resp
