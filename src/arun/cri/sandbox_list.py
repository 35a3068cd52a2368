"""ListPodSandbox and StreamPodSandboxes, with the CRI filters (id prefix, state, labels)."""

from __future__ import annotations

from collections.abc import Iterator

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.sandbox_status import pod_state
from arun.cri.store.sandbox import Sandbox, SandboxState
from arun.cri.util import match_labels


def sandbox_proto(sb: Sandbox) -> api_pb2.PodSandbox:
    md = sb.metadata
    out = api_pb2.PodSandbox(
        id=sb.id, state=pod_state(sb), created_at=md.created_at, runtime_handler=md.runtime_handler
    )
    out.metadata.CopyFrom(md.config.metadata)
    out.labels.update(md.config.labels)
    out.annotations.update(md.config.annotations)
    return out


def filtered(c: CRIService, f: api_pb2.PodSandboxFilter | None) -> Iterator[Sandbox]:
    items = c.sandboxes.list()
    if f is not None and f.id:
        one = c.sandboxes.find(f.id)
        items = [one] if one is not None else []
    for sb in items:
        if sb.state == SandboxState.INIT:
            continue
        if f is not None and f.HasField("state") and pod_state(sb) != f.state.state:
            continue
        if f is not None and f.label_selector and not match_labels(f.label_selector, sb.config.labels):
            continue
        yield sb


async def list_pod_sandbox(
    c: CRIService, req: api_pb2.ListPodSandboxRequest
) -> api_pb2.ListPodSandboxResponse:
    f = req.filter if req.HasField("filter") else None
    return api_pb2.ListPodSandboxResponse(items=[sandbox_proto(sb) for sb in filtered(c, f)])
