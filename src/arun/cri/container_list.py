"""ListContainers and StreamContainers, with the CRI filters (id prefix, state, pod, labels)."""

from __future__ import annotations

from collections.abc import Iterator

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.store.container import Container
from arun.cri.util import match_labels


def container_proto(c: CRIService, container: Container) -> api_pb2.Container:
    md = container.metadata
    st = container.status.get()
    out = api_pb2.Container(
        id=container.id,
        pod_sandbox_id=container.sandbox_id,
        image_ref=md.image_ref,
        image_id=md.image_ref,
        state=st.state(),
        created_at=st.created_at,
    )
    out.metadata.CopyFrom(md.config.metadata)
    out.image.CopyFrom(md.config.image)
    out.labels.update(md.config.labels)
    out.annotations.update(md.config.annotations)
    return out


def filtered(c: CRIService, f: api_pb2.ContainerFilter | None) -> Iterator[Container]:
    items = c.containers.list()
    if f is not None and f.id:
        one = c.containers.find(f.id)
        items = [one] if one is not None else []
    if f is not None and f.pod_sandbox_id:
        sb = c.sandboxes.find(f.pod_sandbox_id)
        sid = sb.id if sb is not None else f.pod_sandbox_id
        items = [x for x in items if x.sandbox_id == sid]
    for x in items:
        st = x.status.get()
        if not st.created_at:
            continue
        if f is not None and f.HasField("state") and st.state() != f.state.state:
            continue
        if (
            f is not None
            and f.label_selector
            and not match_labels(f.label_selector, x.metadata.config.labels)
        ):
            continue
        yield x


async def list_containers(
    c: CRIService, req: api_pb2.ListContainersRequest
) -> api_pb2.ListContainersResponse:
    f = req.filter if req.HasField("filter") else None
    return api_pb2.ListContainersResponse(containers=[container_proto(c, x) for x in filtered(c, f)])
