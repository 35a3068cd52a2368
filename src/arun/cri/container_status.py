"""ContainerStatus: state, timestamps, exit code and reason, image, mounts, log path,
resources, user; the verbose info containerd gives (``info`` → JSON)."""

from __future__ import annotations

import json
from typing import Any

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri import util
from arun.cri.criservice import CRIService
from arun.cri.store.container import Container


def container_status_proto(c: CRIService, container: Container) -> api_pb2.ContainerStatus:
    md = container.metadata
    st = container.status.get()
    cfg = md.config
    out = api_pb2.ContainerStatus(
        id=container.id,
        state=st.state(),
        created_at=st.created_at,
        started_at=st.started_at,
        finished_at=st.finished_at,
        exit_code=st.exit_code,
        reason=st.reason,
        message=st.message,
        log_path=md.log_path,
        image_ref=md.image_ref,
        image_id=md.image_ref,
    )
    out.metadata.CopyFrom(cfg.metadata)
    out.image.CopyFrom(cfg.image)
    if not out.image.image:
        out.image.image = md.image_name
    out.labels.update(cfg.labels)
    out.annotations.update(cfg.annotations)
    out.mounts.extend(md.mounts)
    if st.resources:
        r = api_pb2.LinuxContainerResources()
        r.ParseFromString(st.resources)
        out.resources.linux.CopyFrom(r)
    elif cfg.linux.HasField("resources"):
        out.resources.linux.CopyFrom(cfg.linux.resources)
    spec = container.spec or {}
    u = (spec.get("process") or {}).get("user") or {}
    if u:
        out.user.linux.uid = int(u.get("uid", 0))
        out.user.linux.gid = int(u.get("gid", 0))
        out.user.linux.supplemental_groups.extend(int(g) for g in u.get("additionalGids") or [])
    if md.stop_signal:
        name = md.stop_signal.upper()
        if name.isdigit():
            name = util.signal_name(int(name))
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            out.stop_signal = api_pb2.Signal.Value("SIGNAL_" + name)
        except ValueError:
            pass
    return out


def verbose_info(c: CRIService, container: Container) -> dict[str, str]:
    st = container.status.get()
    md = container.metadata
    sb = c.sandboxes.find(container.sandbox_id)
    info: dict[str, Any] = {
        "sandboxID": container.sandbox_id,
        "pid": st.pid,
        "removing": st.removing,
        "snapshotKey": container.id,
        "snapshotter": c.snapshotter_for(md.runtime_handler),
        "runtimeType": sb.metadata.runtime_type if sb is not None else "",
        "runtimeOptions": None,
        "config": _config_json(md.config),
        "runtimeSpec": container.spec,
    }
    return {"info": json.dumps(info)}


def _config_json(cfg: api_pb2.ContainerConfig) -> dict[str, Any]:
    from google.protobuf import json_format

    doc: dict[str, Any] = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
    return doc


async def container_status(
    c: CRIService, req: api_pb2.ContainerStatusRequest
) -> api_pb2.ContainerStatusResponse:
    container = c.containers.get(req.container_id)
    resp = api_pb2.ContainerStatusResponse(status=container_status_proto(c, container))
    if req.verbose:
        resp.info.update(verbose_info(c, container))
    return resp
