"""Registrations of tasks: the local service (``io.containerd.service.v1.tasks-service``) and
its gRPC servicer (``io.containerd.grpc.v1.tasks``)."""

from __future__ import annotations

from collections.abc import Sequence

from arun.core.mount import Mount
from arun.core.runtime import MountSpec, TaskRuntime
from arun.metadata.meta import Metadata
from arun.plugin import InitContext, PluginType, register
from arun.plugin.grpc import Servicers
from arun.services.tasks import TASKS_SERVICE
from arun.services.tasks.grpc import TasksServicer
from arun.services.tasks.local import TasksLocal


@register(
    PluginType.SERVICE,
    TASKS_SERVICE,
    requires=(PluginType.RUNTIME_V2, PluginType.METADATA, PluginType.EVENT),
)
async def init_local(ic: InitContext) -> TasksLocal:
    runtime: TaskRuntime = ic.get_by_id(PluginType.RUNTIME_V2, "task")
    meta: Metadata = ic.get_single(PluginType.METADATA)

    async def snapshot_mounts(name: str, key: str) -> Sequence[MountSpec]:
        mounts: list[Mount] = await meta.snapshotter(name).mounts(key)
        return mounts

    return TasksLocal(runtime, meta.containers, snapshot_mounts)


@register(PluginType.GRPC, "tasks", requires=(PluginType.SERVICE,))
async def init_grpc(ic: InitContext) -> Servicers:
    local: TasksLocal = ic.get_by_id(PluginType.SERVICE, TASKS_SERVICE)
    return Servicers(TasksServicer(local))
