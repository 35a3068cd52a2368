"""The daemon may run on uvloop: the upgrade take-over, SPDY and WebSocket paths work there too."""

from __future__ import annotations

import asyncio

import uvloop

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.streaming.server import StreamingServer
from arun.testing import streamclient as sc
from arun.testing.streaming import FakeStreamingRuntime, upper_echo


async def scenario() -> None:
    runtime = FakeStreamingRuntime()
    runtime.add_container("ctr")
    runtime.add_service("pod", 80, upper_echo)
    async with StreamingServer(runtime) as server:
        req = api_pb2.ExecRequest(container_id="ctr", cmd=["cat"], stdin=True, stdout=True, stderr=True)
        data = b"u" * 500_000
        result = await sc.spdy_remotecommand(server.get_exec(req).url, stdin=data)
        assert (result.stdout, result.exit_code) == (data, 0)
        result = await sc.ws_remotecommand(server.get_exec(req).url, stdin=b"ws")
        assert (result.stdout, result.exit_code) == (b"ws", 0)
        for websocket in (False, True):
            url = server.get_port_forward(api_pb2.PortForwardRequest(pod_sandbox_id="pod")).url
            client = await sc.PortForwardClient.connect(url, websocket=websocket)
            try:
                assert (await client.forward(80, b"uv")).data == b"UV"
            finally:
                await client.close()


def test_streaming_on_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario(), 30))
