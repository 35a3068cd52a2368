"""ListContainers and StreamContainers, with the CRI filters (id prefix, state, pod, labels).

kubelet lists often and with many containers present, so the list path reads only the in-memory
store and builds each container's entry once: the entry depends on nothing but the container's
fixed metadata and its state, and is rebuilt only when the state changed since it was built.
"""

from __future__ import annotations

from collections.abc import Iterator

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.store.container import Container
from arun.cri.util import match_labels


def container_proto(c: CRIService, container: Container) -> api_pb2.Container:
    """The container's list entry. Shared between replies: callers copy it, never modify it."""
    st = container.status.current
    key = (st.state(), st.created_at)
    cached = container.list_entry
    if cached is not None and cached[0] == key:
        return cached[1]
    md = container.metadata
    out = api_pb2.Container(
        id=container.id,
        pod_sandbox_id=container.sandbox_id,
        image_ref=md.image_ref,
        image_id=md.image_ref,
        state=key[0],
        created_at=key[1],
    )
    out.metadata.CopyFrom(md.config.metadata)
    out.image.CopyFrom(md.config.image)
    out.labels.update(md.config.labels)
    out.annotations.update(md.config.annotations)
    container.list_entry = (key, out)
    return out


def filtered(c: CRIService, f: api_pb2.ContainerFilter | None) -> Iterator[Container]:
    if f is None:
        # The common case (kubelet's relist): everything created, no filter to test.
        return (x for x in c.containers.list() if x.status.current.created_at)
    return _filtered(c, f)


def _filtered(c: CRIService, f: api_pb2.ContainerFilter) -> Iterator[Container]:
    items = c.containers.list()
    if f.id:
        one = c.containers.find(f.id)
        items = [one] if one is not None else []
    if f.pod_sandbox_id:
        sb = c.sandboxes.find(f.pod_sandbox_id)
        sid = sb.id if sb is not None else f.pod_sandbox_id
        items = [x for x in items if x.sandbox_id == sid]
    want_state = f.state.state if f.HasField("state") else None
    selector = dict(f.label_selector) if f.label_selector else None
    for x in items:
        st = x.status.current
        if not st.created_at:
            continue
        if want_state is not None and st.state() != want_state:
            continue
        if selector is not None and not match_labels(selector, x.metadata.config.labels):
            continue
        yield x


async def list_containers(
    c: CRIService, req: api_pb2.ListContainersRequest
) -> api_pb2.ListContainersResponse:
    """The reply; it may be the very object an earlier call returned (listcache): never modify it."""
    f = req.filter if req.HasField("filter") else None
    entries = [container_proto(c, x) for x in filtered(c, f)]
    return c.list_replies.containers.reply(b"" if f is None else f.SerializeToString(), entries)
