"""PodSandboxStatus: state, IPs, namespaces, labels and annotations; verbose info as containerd
gives it (``info`` → JSON with the pid, netns, CNI result, config and runtime spec)."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.criservice import CRIService
from arun.cri.store.sandbox import Sandbox, SandboxState


def pod_state(sb: Sandbox) -> api_pb2.PodSandboxState:
    return api_pb2.SANDBOX_READY if sb.state == SandboxState.READY else api_pb2.SANDBOX_NOTREADY


def pod_status_proto(c: CRIService, sb: Sandbox) -> api_pb2.PodSandboxStatus:
    md = sb.metadata
    cfg = md.config
    out = api_pb2.PodSandboxStatus(
        id=sb.id,
        state=pod_state(sb),
        created_at=md.created_at,
        runtime_handler=md.runtime_handler,
    )
    out.metadata.CopyFrom(cfg.metadata)
    nsopts = cfg.linux.security_context.namespace_options
    if nsopts.network != api_pb2.NODE:
        out.network.ip = md.ip
        out.network.additional_ips.extend(api_pb2.PodIP(ip=ip) for ip in md.additional_ips)
    out.linux.namespaces.options.CopyFrom(nsopts)
    out.labels.update(cfg.labels)
    out.annotations.update(cfg.annotations)
    return out


def verbose_info(c: CRIService, sb: Sandbox) -> dict[str, str]:
    md = sb.metadata
    info: dict[str, Any] = {
        "pid": sb.pid,
        "processStatus": "running" if sb.state == SandboxState.READY else "stopped",
        "netNamespaceClosed": not bool(md.netns_path) or sb.state != SandboxState.READY,
        "image": c.config.sandbox_image,
        "snapshotKey": sb.id,
        "snapshotter": c.snapshotter_for(md.runtime_handler),
        "runtimeHandler": md.runtime_handler,
        "runtimeType": md.runtime_type,
        "runtimeOptions": None,
        "config": json_format.MessageToDict(md.config, preserving_proto_field_name=True),
        "runtimeSpec": sb.spec,
        "cniResult": md.cni_result,
        "sandboxMetadata": {
            "ID": md.id,
            "Name": md.name,
            "NetNSPath": md.netns_path,
            "IP": md.ip,
            "AdditionalIPs": md.additional_ips,
            "RuntimeHandler": md.runtime_handler,
        },
    }
    return {"info": json.dumps(info)}


async def pod_sandbox_status(
    c: CRIService, req: api_pb2.PodSandboxStatusRequest
) -> api_pb2.PodSandboxStatusResponse:
    from arun.cri.container_status import container_status_proto

    sb = c.sandboxes.get(req.pod_sandbox_id)
    if sb.state == SandboxState.INIT:
        from arun.errdefs import NotFoundError

        raise NotFoundError(f"sandbox {req.pod_sandbox_id!r} not found")
    resp = api_pb2.PodSandboxStatusResponse(status=pod_status_proto(c, sb))
    if req.verbose:
        resp.info.update(verbose_info(c, sb))
    for x in c.containers.by_sandbox(sb.id):
        if x.status.get().created_at:
            resp.containers_statuses.append(container_status_proto(c, x))
    import time

    resp.timestamp = time.time_ns()
    return resp
