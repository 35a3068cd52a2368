"""The CRI RuntimeService servicer: each RPC delegates to its own module; RPCs not written yet
answer UNIMPLEMENTED (``PartialServicer``)."""

from __future__ import annotations

from typing import Any

from arun.api.cri.runtime.v1 import api_grpc
from arun.cri import version
from arun.plugin.grpc import PartialServicer


class RuntimeServicer(PartialServicer):
    service = api_grpc.RuntimeServiceBase

    async def Version(self, stream: Any) -> None:
        req = await stream.recv_message()
        await stream.send_message(version.version(req))
