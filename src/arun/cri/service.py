"""The CRI gRPC servicers: ``runtime.v1.RuntimeService`` and ``runtime.v1.ImageService``.

Each method reads its request, runs the RPC's module function in the ``k8s.io``
namespace and sends the answer; errors are errdefs errors, mapped to gRPC codes
by the server middleware. ``Version`` answers even before the plugin is ready;
every other RPC waits for the start-up recovery to finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from arun import namespaces
from arun.api.cri.runtime.v1 import api_grpc, api_pb2
from arun.cri import container_list, sandbox_list, version
from arun.cri.constants import K8S_NAMESPACE
from arun.cri.container_create import create_container
from arun.cri.container_exec import exec_sync
from arun.cri.container_list import list_containers
from arun.cri.container_log_reopen import reopen_container_log
from arun.cri.container_remove import remove_container
from arun.cri.container_start import start_container
from arun.cri.container_status import container_status
from arun.cri.container_stop import stop_container
from arun.cri.container_streaming import attach_url, exec_url, port_forward_url
from arun.cri.container_update_resources import update_container_resources
from arun.cri.images.image_list import images_matching, list_images
from arun.cri.images.image_pull import pull_image
from arun.cri.images.image_remove import remove_image
from arun.cri.images.image_status import image_status
from arun.cri.images.imagefs_info import image_fs_info
from arun.cri.metrics import list_metric_descriptors, list_pod_sandbox_metrics
from arun.cri.runtime_status import runtime_config, status, update_runtime_config
from arun.cri.sandbox_list import list_pod_sandbox
from arun.cri.sandbox_remove import remove_pod_sandbox
from arun.cri.sandbox_run import run_pod_sandbox
from arun.cri.sandbox_status import pod_sandbox_status
from arun.cri.sandbox_stop import stop_pod_sandbox
from arun.cri.sandbox_update_resources import update_pod_sandbox_resources
from arun.cri.stats import container_stats, list_container_stats, list_pod_sandbox_stats, pod_sandbox_stats
from arun.errdefs import UnavailableError, UnimplementedError
from arun.plugin.grpc import PartialServicer

# How many items a Stream* response message carries.
STREAM_BATCH = 100
READY_TIMEOUT = 60.0


class _Base(PartialServicer):
    def __init__(self, service: Any) -> None:
        # ``service`` is a CRIService, or None while the plugin is still loading.
        self.c = service

    async def _ready(self) -> Any:
        c = self.c
        if c is None:
            raise UnavailableError("the CRI plugin is not initialized")
        if not c.ready:
            deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
            while not c.ready:
                if asyncio.get_running_loop().time() > deadline:
                    raise UnavailableError("the CRI plugin is not ready")
                await asyncio.sleep(0.05)
        return c

    async def _unary(self, stream: Any, fn: Callable[[Any, Any], Awaitable[Any]]) -> None:
        req = await stream.recv_message()
        c = await self._ready()
        with namespaces.use(K8S_NAMESPACE):
            resp = await fn(c, req)
        await stream.send_message(resp)

    async def _stream_list(
        self,
        stream: Any,
        fn: Callable[[Any, Any], Awaitable[Iterable[Any]]],
        wrap: Callable[[list[Any]], Any],
    ) -> None:
        req = await stream.recv_message()
        c = await self._ready()
        with namespaces.use(K8S_NAMESPACE):
            items = list(await fn(c, req))
        for i in range(0, len(items), STREAM_BATCH):
            await stream.send_message(wrap(items[i : i + STREAM_BATCH]))


class RuntimeServicer(_Base):
    service = api_grpc.RuntimeServiceBase

    async def Version(self, stream: Any) -> None:
        req = await stream.recv_message()
        await stream.send_message(version.version(req))

    # -- pods ------------------------------------------------------------------------------------

    async def RunPodSandbox(self, stream: Any) -> None:
        await self._unary(stream, run_pod_sandbox)

    async def StopPodSandbox(self, stream: Any) -> None:
        await self._unary(stream, stop_pod_sandbox)

    async def RemovePodSandbox(self, stream: Any) -> None:
        await self._unary(stream, remove_pod_sandbox)

    async def PodSandboxStatus(self, stream: Any) -> None:
        await self._unary(stream, pod_sandbox_status)

    async def ListPodSandbox(self, stream: Any) -> None:
        await self._unary(stream, list_pod_sandbox)

    async def StreamPodSandboxes(self, stream: Any) -> None:
        async def items(c: Any, req: api_pb2.StreamPodSandboxesRequest) -> list[api_pb2.PodSandbox]:
            f = req.filter if req.HasField("filter") else None
            return [sandbox_list.sandbox_proto(sb) for sb in sandbox_list.filtered(c, f)]

        await self._stream_list(
            stream, items, lambda xs: api_pb2.StreamPodSandboxesResponse(pod_sandboxes=xs)
        )

    # -- containers --------------------------------------------------------------------------------

    async def CreateContainer(self, stream: Any) -> None:
        await self._unary(stream, create_container)

    async def StartContainer(self, stream: Any) -> None:
        await self._unary(stream, start_container)

    async def StopContainer(self, stream: Any) -> None:
        await self._unary(stream, stop_container)

    async def RemoveContainer(self, stream: Any) -> None:
        await self._unary(stream, remove_container)

    async def ListContainers(self, stream: Any) -> None:
        await self._unary(stream, list_containers)

    async def StreamContainers(self, stream: Any) -> None:
        async def items(c: Any, req: api_pb2.StreamContainersRequest) -> list[api_pb2.Container]:
            f = req.filter if req.HasField("filter") else None
            return [container_list.container_proto(c, x) for x in container_list.filtered(c, f)]

        await self._stream_list(stream, items, lambda xs: api_pb2.StreamContainersResponse(containers=xs))

    async def ContainerStatus(self, stream: Any) -> None:
        await self._unary(stream, container_status)

    async def UpdateContainerResources(self, stream: Any) -> None:
        await self._unary(stream, update_container_resources)

    async def ReopenContainerLog(self, stream: Any) -> None:
        await self._unary(stream, reopen_container_log)

    async def ExecSync(self, stream: Any) -> None:
        await self._unary(stream, exec_sync)

    async def Exec(self, stream: Any) -> None:
        await self._unary(stream, exec_url)

    async def Attach(self, stream: Any) -> None:
        await self._unary(stream, attach_url)

    async def PortForward(self, stream: Any) -> None:
        await self._unary(stream, port_forward_url)

    # -- stats and metrics ---------------------------------------------------------------------------

    async def ContainerStats(self, stream: Any) -> None:
        await self._unary(stream, container_stats)

    async def ListContainerStats(self, stream: Any) -> None:
        await self._unary(stream, list_container_stats)

    async def StreamContainerStats(self, stream: Any) -> None:
        async def items(c: Any, req: api_pb2.StreamContainerStatsRequest) -> list[api_pb2.ContainerStats]:
            r = api_pb2.ListContainerStatsRequest()
            if req.HasField("filter"):
                r.filter.CopyFrom(req.filter)
            return list((await list_container_stats(c, r)).stats)

        await self._stream_list(
            stream, items, lambda xs: api_pb2.StreamContainerStatsResponse(container_stats=xs)
        )

    async def PodSandboxStats(self, stream: Any) -> None:
        await self._unary(stream, pod_sandbox_stats)

    async def ListPodSandboxStats(self, stream: Any) -> None:
        await self._unary(stream, list_pod_sandbox_stats)

    async def StreamPodSandboxStats(self, stream: Any) -> None:
        async def items(c: Any, req: api_pb2.StreamPodSandboxStatsRequest) -> list[api_pb2.PodSandboxStats]:
            r = api_pb2.ListPodSandboxStatsRequest()
            if req.HasField("filter"):
                r.filter.CopyFrom(req.filter)
            return list((await list_pod_sandbox_stats(c, r)).stats)

        await self._stream_list(
            stream, items, lambda xs: api_pb2.StreamPodSandboxStatsResponse(pod_sandbox_stats=xs)
        )

    async def ListMetricDescriptors(self, stream: Any) -> None:
        await self._unary(stream, list_metric_descriptors)

    async def ListPodSandboxMetrics(self, stream: Any) -> None:
        await self._unary(stream, list_pod_sandbox_metrics)

    async def StreamPodSandboxMetrics(self, stream: Any) -> None:
        async def items(
            c: Any, req: api_pb2.StreamPodSandboxMetricsRequest
        ) -> list[api_pb2.PodSandboxMetrics]:
            return list(
                (await list_pod_sandbox_metrics(c, api_pb2.ListPodSandboxMetricsRequest())).pod_metrics
            )

        await self._stream_list(
            stream, items, lambda xs: api_pb2.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=xs)
        )

    # -- runtime ----------------------------------------------------------------------------------

    async def Status(self, stream: Any) -> None:
        req = await stream.recv_message()
        c = self.c
        if c is None:
            raise UnavailableError("the CRI plugin is not initialized")
        with namespaces.use(K8S_NAMESPACE):
            resp = await status(c, req)
        await stream.send_message(resp)

    async def RuntimeConfig(self, stream: Any) -> None:
        await self._unary(stream, runtime_config)

    async def UpdateRuntimeConfig(self, stream: Any) -> None:
        await self._unary(stream, update_runtime_config)

    async def UpdatePodSandboxResources(self, stream: Any) -> None:
        await self._unary(stream, update_pod_sandbox_resources)

    async def GetContainerEvents(self, stream: Any) -> None:
        await stream.recv_message()
        c = await self._ready()
        events: AsyncIterator[api_pb2.ContainerEventResponse] = c.events.subscribe()
        async for ev in events:
            await stream.send_message(ev)

    async def CheckpointContainer(self, stream: Any) -> None:
        await stream.recv_message()
        raise UnimplementedError(
            "CheckpointContainer is not supported: arun's runtime has no CRIU checkpoint support"
        )

    async def CheckpointPod(self, stream: Any) -> None:
        await stream.recv_message()
        raise UnimplementedError("CheckpointPod is not implemented")

    async def RestorePod(self, stream: Any) -> None:
        await stream.recv_message()
        raise UnimplementedError("RestorePod is not implemented")


class ImageServicer(_Base):
    service = api_grpc.ImageServiceBase

    async def ListImages(self, stream: Any) -> None:
        await self._unary(stream, list_images)

    async def StreamImages(self, stream: Any) -> None:
        async def items(c: Any, req: api_pb2.StreamImagesRequest) -> list[api_pb2.Image]:
            return await images_matching(c, req.filter if req.HasField("filter") else None)

        await self._stream_list(stream, items, lambda xs: api_pb2.StreamImagesResponse(images=xs))

    async def ImageStatus(self, stream: Any) -> None:
        await self._unary(stream, image_status)

    async def PullImage(self, stream: Any) -> None:
        await self._unary(stream, pull_image)

    async def RemoveImage(self, stream: Any) -> None:
        await self._unary(stream, remove_image)

    async def ImageFsInfo(self, stream: Any) -> None:
        await self._unary(stream, image_fs_info)
