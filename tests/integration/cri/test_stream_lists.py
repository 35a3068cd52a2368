"""The server-streaming list RPCs (StreamPodSandboxes, StreamContainers, StreamImages,
StreamPodSandboxStats, StreamPodSandboxMetrics) against their unary counterparts, and
UpdateRuntimeConfig rendering a CNI config template."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from arun.api.cri.runtime.v1 import api_pb2
from arun.testing.cri import CRIClient, CRIEnv, cni_conflist, config_text
from arun.testing.daemon import Daemon


async def collect(method: Any, request: Any, field: str) -> list[Any]:
    async with method.open() as stream:
        await stream.send_message(request, end=True)
        return [item async for msg in stream for item in getattr(msg, field)]


async def test_stream_variants_match_lists(env: CRIEnv, cri: CRIClient) -> None:
    pods = [await cri.run_pod(cri.pod_config(f"stream-{i}", labels={"i": str(i)})) for i in range(3)]
    cids = []
    for p in pods:
        cid = await cri.create(p, "c", env.image("busybox"), ["sleep", "1000"], labels={"p": p[:8]})
        await cri.start(cid)
        cids.append(cid)
    listed = (await cri.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest())).items
    streamed = await collect(cri.rt.StreamPodSandboxes, api_pb2.StreamPodSandboxesRequest(), "pod_sandboxes")
    assert sorted(p.id for p in streamed) == sorted(p.id for p in listed) == sorted(pods)
    one = await collect(
        cri.rt.StreamPodSandboxes,
        api_pb2.StreamPodSandboxesRequest(filter=api_pb2.PodSandboxFilter(label_selector={"i": "1"})),
        "pod_sandboxes",
    )
    assert [p.id for p in one] == [pods[1]]
    containers = await collect(cri.rt.StreamContainers, api_pb2.StreamContainersRequest(), "containers")
    assert sorted(c.id for c in containers) == sorted(cids)
    mine = await collect(
        cri.rt.StreamContainers,
        api_pb2.StreamContainersRequest(filter=api_pb2.ContainerFilter(pod_sandbox_id=pods[2])),
        "containers",
    )
    assert [c.id for c in mine] == [cids[2]]
    images = await collect(cri.img.StreamImages, api_pb2.StreamImagesRequest(), "images")
    assert images and {i.id for i in images} == {
        i.id for i in (await cri.img.ListImages(api_pb2.ListImagesRequest())).images
    }
    stats = await collect(
        cri.rt.StreamPodSandboxStats, api_pb2.StreamPodSandboxStatsRequest(), "pod_sandbox_stats"
    )
    assert sorted(s.attributes.id for s in stats) == sorted(pods)
    metrics = await collect(
        cri.rt.StreamPodSandboxMetrics, api_pb2.StreamPodSandboxMetricsRequest(), "pod_sandbox_metrics"
    )
    assert sorted(m.pod_sandbox_id for m in metrics) == sorted(pods)
    assert all(len(m.container_metrics) == 1 for m in metrics)
    await cri.remove_all_pods()


async def test_update_runtime_config_renders_the_cni_template() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cri-template-"))
    d = None
    try:
        conf_dir = tmp / "net.d"
        template = tmp / "template.json"
        doc = cni_conflist("templated", "acritpl0", "{{.PodCIDR}}")
        template.write_text(json.dumps(doc))
        text = config_text(sandbox_image="unused/pause:1", cni_conf_dir=str(conf_dir), certs_dir=str(tmp))
        text = text.replace(
            "    max_conf_num = 1\n", f'    max_conf_num = 1\n    conf_template = "{template}"\n'
        )
        d = await asyncio.to_thread(Daemon.start, config_text=text)
        from grpclib.client import Channel

        ch = Channel(path=str(d.address))
        try:
            c = CRIClient(ch)
            st = await c.rt.Status(api_pb2.StatusRequest())
            net = next(x for x in st.status.conditions if x.type == "NetworkReady")
            assert not net.status and net.reason == "NetworkPluginNotReady" and net.message
            await c.rt.UpdateRuntimeConfig(
                api_pb2.UpdateRuntimeConfigRequest(
                    runtime_config=api_pb2.RuntimeConfig(
                        network_config=api_pb2.NetworkConfig(pod_cidr="10.123.0.0/24")
                    )
                )
            )
            written = json.loads((conf_dir / "10-containerd-net.conflist").read_text())
            assert written["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.123.0.0/24"}]]
            st = await c.rt.Status(api_pb2.StatusRequest())
            assert next(x for x in st.status.conditions if x.type == "NetworkReady").status
        finally:
            ch.close()
    finally:
        if d is not None:
            await asyncio.to_thread(d.stop)
        shutil.rmtree(tmp, ignore_errors=True)
