"""UpdateContainerResources: new CPU/memory limits for a container's cgroup (and its spec, so
that a container not yet started gets them too)."""

from __future__ import annotations

import asyncio
import copy
import json

from arun.api.cri.runtime.v1 import api_pb2
from arun.core import typeurl
from arun.cri.criservice import CRIService
from arun.cri.opts import spec as copts
from arun.cri.util import SPEC_TYPE_URL
from arun.errdefs import FailedPreconditionError

RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


async def update_container_resources(
    c: CRIService, req: api_pb2.UpdateContainerResourcesRequest
) -> api_pb2.UpdateContainerResourcesResponse:
    container = c.containers.get(req.container_id)
    if not req.HasField("linux"):
        return api_pb2.UpdateContainerResourcesResponse()
    async with container.lock:
        st = container.status.get()
        if st.state() not in (api_pb2.CONTAINER_CREATED, api_pb2.CONTAINER_RUNNING):
            raise FailedPreconditionError(
                f"container {container.id!r} is in {api_pb2.ContainerState.Name(st.state())} state"
            )
        spec = copy.deepcopy(container.spec or {})
        old = json.dumps(spec)
        copts.with_resources(spec, req.linux)
        if req.linux.oom_score_adj:
            copts.with_oom_score_adj(spec, req.linux.oom_score_adj, c.config.restrict_oom_score_adj)
        if container.task is not None:
            resources = spec.get("linux", {}).get("resources", {})
            await container.task.update(
                typeurl.Any(RESOURCES_TYPE_URL, json.dumps(resources).encode()), dict(req.annotations)
            )
        if json.dumps(spec) != old:
            record = await c.meta.containers.get(container.id)
            record.spec = typeurl.Any(SPEC_TYPE_URL, json.dumps(spec).encode())
            await c.meta.containers.update(record, "spec")
            container.spec = spec
        merged = api_pb2.LinuxContainerResources()
        if st.resources:
            merged.ParseFromString(st.resources)
        elif container.config.linux.HasField("resources"):
            merged.CopyFrom(container.config.linux.resources)
        merged.MergeFrom(req.linux)
        await asyncio.to_thread(container.status.update, resources=merged.SerializeToString())
    return api_pb2.UpdateContainerResourcesResponse()
