"""ListPodSandbox and StreamPodSandboxes, with the CRI filters (id prefix, state, labels).

As for containers (container_list), the list path reads only the in-memory store and builds each
pod's entry once per state.
"""

from __future__ import annotations

from collections.abc import Iterator

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.sandbox_status import pod_state
from arun.cri.store.sandbox import Sandbox, SandboxState
from arun.cri.util import match_labels


def sandbox_proto(sb: Sandbox) -> api_pb2.PodSandbox:
    """The pod's list entry. Shared between replies: callers copy it, never modify it."""
    md = sb.metadata
    key = (int(pod_state(sb)), md.created_at)
    cached = sb.list_entry
    if cached is not None and cached[0] == key:
        return cached[1]
    out = api_pb2.PodSandbox(
        id=sb.id, state=pod_state(sb), created_at=key[1], runtime_handler=md.runtime_handler
    )
    out.metadata.CopyFrom(md.config.metadata)
    out.labels.update(md.config.labels)
    out.annotations.update(md.config.annotations)
    sb.list_entry = (key, out)
    return out


def filtered(c: CRIService, f: api_pb2.PodSandboxFilter | None) -> Iterator[Sandbox]:
    if f is None:
        return (sb for sb in c.sandboxes.list() if sb.state != SandboxState.INIT)
    return _filtered(c, f)


def _filtered(c: CRIService, f: api_pb2.PodSandboxFilter) -> Iterator[Sandbox]:
    items = c.sandboxes.list()
    if f.id:
        one = c.sandboxes.find(f.id)
        items = [one] if one is not None else []
    want_state = f.state.state if f.HasField("state") else None
    selector = dict(f.label_selector) if f.label_selector else None
    for sb in items:
        if sb.state == SandboxState.INIT:
            continue
        if want_state is not None and pod_state(sb) != want_state:
            continue
        if selector is not None and not match_labels(selector, sb.config.labels):
            continue
        yield sb


async def list_pod_sandbox(
    c: CRIService, req: api_pb2.ListPodSandboxRequest
) -> api_pb2.ListPodSandboxResponse:
    """The reply; it may be the very object an earlier call returned (listcache): never modify it."""
    f = req.filter if req.HasField("filter") else None
    entries = [sandbox_proto(sb) for sb in filtered(c, f)]
    return c.list_replies.sandboxes.reply(b"" if f is None else f.SerializeToString(), entries)
