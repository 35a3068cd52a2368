"""UpdatePodSandboxResources: kubelet tells the runtime the pod's new overhead and resources
(in-place pod resize). The pause container's cgroup needs no change under cgroupfs pods
whose parent kubelet sizes itself, so this only records nothing and succeeds, as containerd
does without NRI plugins."""

from __future__ import annotations

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService


async def update_pod_sandbox_resources(
    c: CRIService, req: api_pb2.UpdatePodSandboxResourcesRequest
) -> api_pb2.UpdatePodSandboxResourcesResponse:
    c.sandboxes.get(req.pod_sandbox_id)
    return api_pb2.UpdatePodSandboxResourcesResponse()
