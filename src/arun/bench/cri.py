"""A thin CRI v1 caller for the harness: method name + request message → reply message.

Kept raw on purpose: the harness measures the runtime, so nothing is
converted on the way (one grpclib call per step, as crictl makes one grpc-go
call). Errors arrive as errdefs classes like everywhere else in the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from arun import errdefs
from arun.client.transport import CallOptions, GrpcTransport

__all__ = ["CRI", "IMAGE_METHODS"]

IMAGE_METHODS = frozenset({"ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"})


def _api() -> Any:
    from arun.api.cri.runtime.v1 import api_pb2

    return api_pb2


class CRI:
    """``runtime.v1.RuntimeService`` and ``ImageService`` on one endpoint."""

    def __init__(self, endpoint: str, *, timeout: float | None = 120.0) -> None:
        self.endpoint = endpoint
        self.transport = GrpcTransport(endpoint)
        self.opts = CallOptions(timeout=timeout)
        self.pb = _api()

    async def __aenter__(self) -> CRI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.close()

    def reply_type(self, method: str) -> type[Message]:
        service = "ImageService" if method in IMAGE_METHODS else "RuntimeService"
        desc = self.pb.DESCRIPTOR.services_by_name[service].methods_by_name.get(method)
        if desc is None:
            raise errdefs.InvalidArgumentError(f"no CRI method {method!r}")
        cls: type[Message] = getattr(self.pb, desc.output_type.name)
        return cls

    async def call(self, method: str, request: Message, *, call_timeout: float | None = None) -> Any:
        service = "ImageService" if method in IMAGE_METHODS else "RuntimeService"
        opts = self.opts if call_timeout is None else CallOptions(timeout=call_timeout)
        return await self.transport.unary(
            f"/runtime.v1.{service}/{method}", request, self.reply_type(method), opts
        )

    async def version(self) -> Any:
        return await self.call("Version", self.pb.VersionRequest(version="v1"))

    async def status(self, verbose: bool = False) -> Any:
        return await self.call("Status", self.pb.StatusRequest(verbose=verbose))

    async def pods(self, labels: Mapping[str, str] | None = None) -> list[Any]:
        req = self.pb.ListPodSandboxRequest()
        if labels:
            req.filter.label_selector.update(labels)
        return list((await self.call("ListPodSandbox", req)).items)

    async def containers(self, labels: Mapping[str, str] | None = None, pod: str = "") -> list[Any]:
        req = self.pb.ListContainersRequest()
        if labels:
            req.filter.label_selector.update(labels)
        if pod:
            req.filter.pod_sandbox_id = pod
        return list((await self.call("ListContainers", req)).containers)

    async def remove_pod(self, pod_id: str) -> None:
        """Stop and remove a pod (its containers go with it); a missing pod is fine."""
        with contextlib.suppress(errdefs.NotFoundError):
            await self.call("StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        with contextlib.suppress(errdefs.NotFoundError):
            await self.call("RemovePodSandbox", self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))

    async def remove_container(self, container_id: str) -> None:
        with contextlib.suppress(errdefs.NotFoundError):
            await self.call(
                "StopContainer", self.pb.StopContainerRequest(container_id=container_id, timeout=0)
            )
        with contextlib.suppress(errdefs.NotFoundError):
            await self.call("RemoveContainer", self.pb.RemoveContainerRequest(container_id=container_id))

    async def remove_everything(self, labels: Mapping[str, str] | None = None, concurrency: int = 8) -> int:
        """Remove every container and pod (matching ``labels``); how many pods went."""
        sem = asyncio.Semaphore(concurrency)

        async def one(coro: Any) -> None:
            async with sem:
                with contextlib.suppress(errdefs.ArunError):
                    await coro

        ctrs = await self.containers(labels)
        await asyncio.gather(*(one(self.remove_container(c.id)) for c in ctrs))
        pods = await self.pods(labels)
        await asyncio.gather(*(one(self.remove_pod(p.id)) for p in pods))
        return len(pods)
