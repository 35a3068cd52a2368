"""A daemon restart keeps the CRI's pods and containers: running ones stay running (their logs,
exec and stop still work), exited ones keep their exit status, names stay reserved."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from arun.api.cri.runtime.v1 import api_pb2
from arun.testing.cri import CRIEnv
from arun.testing.daemon import Daemon

from .conftest import leftovers, nothing_left


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_restart_recovers_pods_and_containers(env: CRIEnv, how: str) -> None:
    logdir = Path(tempfile.mkdtemp(prefix="cri-restart-"))
    try:
        async with env.client() as cri:
            cfg = cri.pod_config("survivor", log_directory=str(logdir))
            pod = await cri.run_pod(cfg)
            running = await cri.create(
                pod,
                "runner",
                env.image("busybox"),
                ["sh", "-c", "while true; do echo beat; sleep 0.2; done"],
                log_path="r.log",
            )
            done = await cri.create(pod, "done", env.image("busybox"), ["sh", "-c", "exit 4"])
            created = await cri.create(pod, "created", env.image("busybox"), ["sleep", "100"])
            await cri.start(running)
            await cri.start(done)
            await cri.wait_state(done, api_pb2.CONTAINER_EXITED)
            before = await cri.status(running)
            ip_before = (await cri.pod_status(pod)).status.network.ip
            assert ip_before
        # kill -9 (nothing gets a chance to clean up) or a graceful stop.
        assert env.daemon is not None
        old = env.daemon
        old.signal(getattr(signal, how))
        await asyncio.to_thread(old.proc.wait, 60)
        size_before = (logdir / "r.log").stat().st_size
        env.daemon = await asyncio.to_thread(
            Daemon.start, config=str(old.base / "config.toml"), base=old.base
        )
        async with env.client() as cri:
            ps = await cri.pod_status(pod)
            assert ps.status.state == api_pb2.SANDBOX_READY
            assert ps.status.network.ip == ip_before
            st = await cri.status(running)
            assert st.state == api_pb2.CONTAINER_RUNNING and st.started_at == before.started_at
            st = await cri.status(done)
            assert (st.state, st.exit_code, st.reason) == (api_pb2.CONTAINER_EXITED, 4, "Error")
            assert (await cri.status(created)).state == api_pb2.CONTAINER_CREATED
            # The log goes on.
            await asyncio.sleep(1.0)
            assert (logdir / "r.log").stat().st_size > size_before
            r = await cri.exec_sync(running, ["echo", "still here"])
            assert r.stdout == b"still here\n"
            # Names are still taken by these containers.
            with pytest.raises(GRPCError) as e:
                await cri.create(pod, "runner", env.image("busybox"), ["true"])
            assert e.value.status == Status.ALREADY_EXISTS
            await cri.start(created)
            await cri.wait_state(created, api_pb2.CONTAINER_RUNNING)
            await cri.rt.StopContainer(api_pb2.StopContainerRequest(container_id=running, timeout=1))
            assert (await cri.status(running)).state == api_pb2.CONTAINER_EXITED
            await cri.stop_pod(pod)
            await cri.remove_pod(pod)
        assert nothing_left(env), leftovers(env)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
