"""Registrations of tasks: the local service (``io.containerd.service.v1.tasks-service``) and
its gRPC servicer (``io.containerd.grpc.v1.tasks``)."""

from __future__ import annotations

from collections.abc import Sequence

from arun.core.runtime import MountSpec, TaskRuntime
from arun.plugin import InitContext, PluginType, SkipPlugin, register
from arun.plugin.grpc import Servicers
from arun.services.tasks import TASKS_SERVICE
from arun.services.tasks.grpc import TasksServicer
from arun.services.tasks.local import SnapshotMounts, TasksLocal


@register(
    PluginType.SERVICE,
    TASKS_SERVICE,
    requires=(PluginType.RUNTIME_V2, PluginType.METADATA, PluginType.EVENT),
)
async def init_local(ic: InitContext) -> TasksLocal:
    runtime: TaskRuntime = ic.get_by_id(PluginType.RUNTIME_V2, "task")
    meta = ic.get_single(PluginType.METADATA)
    containers = getattr(meta, "containers", None)
    if containers is None:
        raise SkipPlugin("the metadata plugin has no container store")
    snapshot_mounts: SnapshotMounts | None = None
    snapshotter = getattr(meta, "snapshotter", None)
    if snapshotter is not None:

        async def mounts(name: str, key: str) -> Sequence[MountSpec]:
            found: Sequence[MountSpec] = await snapshotter(name).mounts(key)
            return found

        snapshot_mounts = mounts
    return TasksLocal(runtime, containers, snapshot_mounts)


@register(PluginType.GRPC, "tasks", requires=(PluginType.SERVICE,))
async def init_grpc(ic: InitContext) -> Servicers:
    local: TasksLocal = ic.get_by_id(PluginType.SERVICE, TASKS_SERVICE)
    return Servicers(TasksServicer(local))
