"""Status (RuntimeReady, NetworkReady, runtime handlers and features), RuntimeConfig (the cgroup
driver), UpdateRuntimeConfig (the pod CIDR, for a CNI config template)."""

from __future__ import annotations

import asyncio
import json
import logging
import os

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.container_create import rro_supported
from arun.cri.criservice import CRIService

log = logging.getLogger(__name__)

RUNTIME_READY = "RuntimeReady"
NETWORK_READY = "NetworkReady"


async def status(c: CRIService, req: api_pb2.StatusRequest) -> api_pb2.StatusResponse:
    runtime_ready = api_pb2.RuntimeCondition(type=RUNTIME_READY, status=c.ready)
    if not c.ready:
        runtime_ready.reason = "RuntimeNotReady"
        runtime_ready.message = "the CRI plugin is still starting"
    net = await c.network.status()
    network_ready = api_pb2.RuntimeCondition(
        type=NETWORK_READY, status=net.ready, reason=net.reason, message=net.message
    )
    resp = api_pb2.StatusResponse()
    resp.status.conditions.extend([runtime_ready, network_ready])
    features = api_pb2.RuntimeHandlerFeatures(
        recursive_read_only_mounts=rro_supported(), user_namespaces=not await c.userns_unsupported()
    )
    default = c.config.containerd.default_runtime_name
    resp.runtime_handlers.append(api_pb2.RuntimeHandler(name="", features=features))
    for name in sorted(c.config.containerd.runtimes):
        resp.runtime_handlers.append(api_pb2.RuntimeHandler(name=name, features=features))
    resp.features.supplemental_groups_policy = True
    if req.verbose:
        from arun.plugin.config import to_dict

        resp.info["config"] = json.dumps(to_dict(c.config))
        resp.info["cniconfig"] = json.dumps(c.network.config_info())
        resp.info["lastCNILoadStatus"] = c.network.last_load_status()
        resp.info["defaultRuntimeName"] = default
    return resp


async def runtime_config(c: CRIService, req: api_pb2.RuntimeConfigRequest) -> api_pb2.RuntimeConfigResponse:
    resp = api_pb2.RuntimeConfigResponse()
    systemd = c.config.systemd_cgroup or any(
        bool(rt.options.get("SystemdCgroup") or rt.options.get("systemd_cgroup"))
        for name, rt in c.config.containerd.runtimes.items()
        if name == c.config.containerd.default_runtime_name
    )
    resp.linux.cgroup_driver = api_pb2.SYSTEMD if systemd else api_pb2.CGROUPFS
    return resp


async def update_runtime_config(
    c: CRIService, req: api_pb2.UpdateRuntimeConfigRequest
) -> api_pb2.UpdateRuntimeConfigResponse:
    cidr = req.runtime_config.network_config.pod_cidr
    template = c.config.cni.conf_template
    if not cidr or not template:
        return api_pb2.UpdateRuntimeConfigResponse()
    # containerd renders conf_template (a Go template) with .PodCIDR / .PodCIDRRanges / .Routes;
    # the common fields are substituted here.
    ranges = [r.strip() for r in cidr.split(",") if r.strip()]
    try:
        await asyncio.to_thread(_render_template, template, c.config.cni.conf_dir, ranges[0])
    except OSError as e:
        log.warning("cannot render CNI config template %s: %s", template, e)
    return api_pb2.UpdateRuntimeConfigResponse()


def _render_template(template: str, conf_dir: str, pod_cidr: str) -> None:
    with open(template) as f:
        text = f.read()
    text = text.replace("{{.PodCIDR}}", pod_cidr).replace("{{index .PodCIDRRanges 0}}", pod_cidr)
    os.makedirs(conf_dir, exist_ok=True)
    target = os.path.join(conf_dir, "10-containerd-net.conflist")
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, target)
