"""The Tasks servicer over TasksLocal: one request in, one reply out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from arun.api.containerd.services.tasks.v1 import tasks_grpc
from arun.services.tasks.local import TasksLocal


async def _unary(stream: Any, handler: Callable[[Any], Awaitable[Any]]) -> None:
    req = await stream.recv_message()
    await stream.send_message(await handler(req))


class TasksServicer(tasks_grpc.TasksBase):
    def __init__(self, local: TasksLocal) -> None:
        self.local = local

    async def Create(self, stream: Any) -> None:
        await _unary(stream, self.local.create)

    async def Start(self, stream: Any) -> None:
        await _unary(stream, self.local.start)

    async def Delete(self, stream: Any) -> None:
        await _unary(stream, self.local.delete)

    async def DeleteProcess(self, stream: Any) -> None:
        await _unary(stream, self.local.delete_process)

    async def Get(self, stream: Any) -> None:
        await _unary(stream, self.local.get)

    async def List(self, stream: Any) -> None:
        await _unary(stream, self.local.list)

    async def Kill(self, stream: Any) -> None:
        await _unary(stream, self.local.kill)

    async def Exec(self, stream: Any) -> None:
        await _unary(stream, self.local.exec)

    async def ResizePty(self, stream: Any) -> None:
        await _unary(stream, self.local.resize_pty)

    async def CloseIO(self, stream: Any) -> None:
        await _unary(stream, self.local.close_io)

    async def Pause(self, stream: Any) -> None:
        await _unary(stream, self.local.pause)

    async def Resume(self, stream: Any) -> None:
        await _unary(stream, self.local.resume)

    async def ListPids(self, stream: Any) -> None:
        await _unary(stream, self.local.list_pids)

    async def Checkpoint(self, stream: Any) -> None:
        await _unary(stream, self.local.checkpoint)

    async def Update(self, stream: Any) -> None:
        await _unary(stream, self.local.update)

    async def Metrics(self, stream: Any) -> None:
        await _unary(stream, self.local.metrics)

    async def Wait(self, stream: Any) -> None:
        await _unary(stream, self.local.wait)
