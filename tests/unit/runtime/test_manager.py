"""The task manager against in-process fake shims: lifecycle, grouping, dead shims, restart."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from arun import namespaces
from arun.api.containerd.events import task_pb2 as events_pb2
from arun.core.runtime import PROCESS_TYPE_URL, CreateOpts, ExecOpts, Status
from arun.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnimplementedError,
)
from arun.runtime import manager as managermod
from arun.runtime.binary import BootstrapResult
from arun.runtime.manager import TaskManager
from tests.unit.runtime.fakeshim import FakeShimManager

NS = "ns1"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str | None, Any]] = []

    async def publish(self, topic: str, event: Any) -> None:
        self.events.append((topic, namespaces.current(), event))

    def topics(self) -> list[str]:
        return [t for t, _, _ in self.events]


@pytest.fixture
def base() -> Iterator[Path]:
    # Short: fake shim sockets live here too.
    d = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def spec(**annotations: str) -> bytes:
    return json.dumps({"ociVersion": "1.1.0", "annotations": annotations}).encode()


class Env:
    def __init__(self, base: Path, **kw: Any) -> None:
        self.base = base
        (base / "sockets").mkdir(exist_ok=True)
        self.shims = FakeShimManager(base / "sockets", **kw)
        self.events = Recorder()
        self.tasks = self.new_manager()

    def new_manager(self) -> TaskManager:
        return TaskManager(self.base / "root", self.base / "state", self.shims, publisher=self.events)

    async def close(self) -> None:
        await self.tasks.close()
        await self.shims.close()


@pytest.fixture
async def env(base: Path) -> AsyncIterator[Env]:
    e = Env(base)
    with namespaces.use(NS):
        yield e
    await e.close()


async def test_create_start_wait_delete(env: Env) -> None:
    task = await env.tasks.create("c1", CreateOpts(spec=spec(), runtime="io.containerd.fake.v1"))
    bundle = env.base / "state" / NS / "c1"
    assert (bundle / "config.json").read_bytes() == spec()
    assert (bundle / "rootfs").is_dir()
    assert (bundle / "work").resolve() == env.base / "root" / NS / "c1"
    assert json.loads((bundle / "bootstrap.json").read_text())["version"] == 3
    assert (bundle / "shim-binary-path").read_text() == "/fake/containerd-shim-fake-v1"
    create = env.shims.shim_of(NS, "c1").called("Create")[0]
    assert create.bundle == str(bundle) and create.id == "c1"
    assert task.init_pid == 1001
    assert await task.start() == 1001
    assert (await task.state()).status == Status.RUNNING
    assert [t.id for t in await env.tasks.tasks()] == ["c1"]
    await task.kill(9)
    exit = await task.wait()
    assert (exit.pid, exit.status) == (1001, 137)
    deleted = await env.tasks.delete("c1")
    assert deleted.status == 137
    assert not bundle.exists() and not (env.base / "root" / NS / "c1").exists()
    assert await env.tasks.tasks() == []
    # The shim served no other task: it was asked to shut down. A clean delete publishes
    # nothing and does not run the shim's delete command.
    assert env.shims.shim_of(NS, "c1").called("Shutdown")
    assert env.shims.deleted == []
    assert env.events.events == []


async def test_create_twice_is_already_exists(env: Env) -> None:
    await env.tasks.create("c1", CreateOpts(spec=spec()))
    with pytest.raises(AlreadyExistsError):
        await env.tasks.create("c1", CreateOpts(spec=spec()))
    # The same id in another namespace is another task.
    with namespaces.use("other"):
        await env.tasks.create("c1", CreateOpts(spec=spec()))
        assert [t.namespace for t in await env.tasks.tasks()] == ["other"]
    assert len(await env.tasks.tasks(all=True)) == 2


async def test_bad_ids_and_missing_tasks(env: Env) -> None:
    with pytest.raises(InvalidArgumentError):
        await env.tasks.create("../x", CreateOpts(spec=spec()))
    with pytest.raises(NotFoundError):
        await env.tasks.get("nope")
    with pytest.raises(NotFoundError):
        await env.tasks.delete("nope")
    with namespaces.use(""), pytest.raises(FailedPreconditionError):
        await env.tasks.create("c1", CreateOpts(spec=spec()))
    assert not (env.base / "state" / NS).exists() or not any((env.base / "state" / NS).iterdir())


async def test_failed_create_leaves_nothing(env: Env) -> None:
    env.shims.fail_start = True
    with pytest.raises(FailedPreconditionError, match="no such runtime"):
        await env.tasks.create("c1", CreateOpts(spec=spec()))
    assert not (env.base / "state" / NS / "c1").exists()
    env.shims.fail_start = False
    # The shim starts but its Create fails: the task is taken back, the shim shut down.
    await env.tasks.create("warm", CreateOpts(spec=spec(**{"io.kubernetes.cri.sandbox-id": "p"})))
    shim = env.shims.shim_of(NS, "p")
    shim.fail_create = True
    with pytest.raises(FailedPreconditionError, match="runc create failed"):
        await env.tasks.create("c2", CreateOpts(spec=spec(**{"io.kubernetes.cri.sandbox-id": "p"})))
    assert not (env.base / "state" / NS / "c2").exists()
    assert [t.id for t in await env.tasks.tasks()] == ["warm"]
    # The shim still serves "warm": no Shutdown was sent to it.
    assert shim.called("Shutdown") == []
    await asyncio.sleep(0)
    assert env.events.events == []
    # The id is free again.
    shim.fail_create = False
    await env.tasks.create("c2", CreateOpts(spec=spec(**{"io.kubernetes.cri.sandbox-id": "p"})))


async def test_tasks_of_a_pod_share_a_shim(env: Env) -> None:
    pod = {"io.kubernetes.cri.sandbox-id": "pod1"}
    pause = await env.tasks.create("pause", CreateOpts(spec=spec(**pod)))
    app = await env.tasks.create("app", CreateOpts(spec=spec(**pod)))
    assert pause.address == app.address
    assert env.tasks.shares_shim(app) == [pause]
    shim = env.shims.shim_of(NS, "pod1")
    await app.kill(15)
    await env.tasks.delete("app")
    assert shim.called("Shutdown") == []  # pause still runs in it
    assert not shim.dead
    assert (await pause.state()).status == Status.CREATED
    await pause.kill(9)
    await env.tasks.delete("pause")
    assert len(shim.called("Shutdown")) == 1
    assert env.events.events == []


async def test_exec_processes(env: Env) -> None:
    task = await env.tasks.create("c1", CreateOpts(spec=spec()))
    await task.start()

    class Spec:
        type_url = PROCESS_TYPE_URL
        value = b'{"args": ["sh"]}'

    p = await task.exec("e1", ExecOpts(spec=Spec()))
    assert (await p.start()) > 1001
    got = env.shims.shim_of(NS, "c1").called("Exec")[0]
    assert got.spec.type_url == PROCESS_TYPE_URL and got.exec_id == "e1"
    assert (await task.process("e1")).id == "e1"
    with pytest.raises(NotFoundError):
        await task.process("e2")
    with pytest.raises(InvalidArgumentError):
        await task.exec("bad/id", ExecOpts(spec=Spec()))
    pids = await task.pids()
    assert pids[0].pid == 1001 and pids[1].info is not None
    await p.resize_pty(80, 24)
    await p.close_io()
    await p.kill(9)
    assert (await p.wait()).status == 137
    assert (await p.delete()).status == 137
    with pytest.raises(UnimplementedError):
        await task.checkpoint("/tmp/x")
    await task.pause()
    assert (await task.state()).status == Status.PAUSED
    await task.resume()
    stats = await task.stats()
    assert stats.type_url == "io.containerd.cgroups.v1.Metrics"


async def test_shim_death_reports_exit_and_cleans_up(env: Env) -> None:
    task = await env.tasks.create("c1", CreateOpts(spec=spec()))
    await task.start()
    env.shims.shim_of(NS, "c1").die()
    await asyncio.wait_for(task.closed.wait(), 5)
    assert env.shims.deleted == [(NS, "c1")]
    assert env.events.topics() == ["/tasks/exit", "/tasks/delete"]
    _, ns, exit_event = env.events.events[0]
    assert ns == NS
    assert isinstance(exit_event, events_pb2.TaskExit)
    assert (exit_event.container_id, exit_event.id, exit_event.exit_status) == ("c1", "c1", 137)
    assert exit_event.pid == 1001
    assert await env.tasks.tasks() == []
    assert not (env.base / "state" / NS / "c1").exists()
    # A caller still holding the task gets UNAVAILABLE, and NOT_FOUND for its state.
    with pytest.raises(UnavailableError, match="shim exited"):
        await task.kill(9)
    with pytest.raises(NotFoundError):
        await task.state()


async def test_shim_death_without_delete_binary_is_255(env: Env) -> None:
    env.shims.delete_exit = None
    task = await env.tasks.create("c1", CreateOpts(spec=spec()))
    env.shims.shim_of(NS, "c1").die()
    await asyncio.wait_for(task.closed.wait(), 5)
    assert [e.exit_status for _, _, e in env.events.events] == [255, 255]


async def test_delete_after_shim_death_is_not_found(env: Env) -> None:
    task = await env.tasks.create("c1", CreateOpts(spec=spec()))
    env.shims.shim_of(NS, "c1").die()
    await asyncio.wait_for(task.closed.wait(), 5)
    with pytest.raises(NotFoundError):
        await env.tasks.delete("c1")


async def test_v2_only_shim_is_spoken_to_in_v2(base: Path) -> None:
    e = Env(base, versions=(2,), result_version=3)
    try:
        with namespaces.use(NS):
            task = await e.tasks.create("c1", CreateOpts(spec=spec()))
            assert task.conn.version == 2
            await task.start()
            assert (await task.state()).status == Status.RUNNING
    finally:
        await e.close()


async def test_close_leaves_shims_running(env: Env) -> None:
    task = await env.tasks.create("c1", CreateOpts(spec=spec()))
    await task.start()
    await env.tasks.close()
    await asyncio.sleep(0.05)
    shim = env.shims.shim_of(NS, "c1")
    assert not shim.dead and "c1" in shim.tasks
    assert env.events.events == [] and env.shims.deleted == []
    assert (env.base / "state" / NS / "c1").exists()


async def test_restart_reloads_live_and_cleans_dead(env: Env) -> None:
    live = await env.tasks.create("live", CreateOpts(spec=spec()))
    await live.start()
    exited = await env.tasks.create("exited", CreateOpts(spec=spec()))
    await exited.start()
    await env.tasks.create("dead", CreateOpts(spec=spec()))
    await env.tasks.close()
    # While "the daemon is down": one task exits, one shim dies.
    env.shims.shim_of(NS, "exited").tasks["exited"].init.exit(3)
    env.shims.shim_of(NS, "dead").die()
    await asyncio.sleep(0.05)
    # An empty bundle directory and a leftover work dir are removed.
    (env.base / "state" / NS / "empty").mkdir()
    (env.base / "root" / NS / "orphan").mkdir()

    env.tasks = env.new_manager()
    await env.tasks.load_existing()
    assert sorted(t.id for t in await env.tasks.tasks()) == ["exited", "live"]
    live2 = await env.tasks.get("live")
    assert (await live2.state()).status == Status.RUNNING
    ex = await env.tasks.get("exited")
    state = await ex.state()
    assert (state.status, state.exit_status) == (Status.STOPPED, 3)
    assert (await ex.wait()).status == 3
    # The dead one: its delete command ran, its exit was published, its bundle is gone.
    assert env.shims.deleted == [(NS, "dead")]
    assert env.events.topics() == ["/tasks/exit", "/tasks/delete"]
    assert env.events.events[0][2].container_id == "dead"
    assert not (env.base / "state" / NS / "dead").exists()
    assert not (env.base / "state" / NS / "empty").exists()
    assert not (env.base / "root" / NS / "orphan").exists()
    assert (await env.tasks.delete("exited")).status == 3
    # Still manageable.
    await live2.kill(9)
    assert (await env.tasks.delete("live")).status == 137


async def test_restart_with_a_hung_shim_does_not_block(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(managermod, "LOAD_TIMEOUT", 0.5)
    await env.tasks.create("ok", CreateOpts(spec=spec()))
    await env.tasks.create("hung", CreateOpts(spec=spec()))
    await env.tasks.close()
    env.shims.shim_of(NS, "hung").hang_connect = True
    env.tasks = env.new_manager()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await env.tasks.load_existing()
    assert loop.time() - t0 < 3
    assert [t.id for t in await env.tasks.tasks()] == ["ok"]
    assert env.shims.deleted == [(NS, "hung")]


async def test_restart_migrates_an_address_file(env: Env) -> None:
    task = await env.tasks.create("c1", CreateOpts(spec=spec()))
    await env.tasks.close()
    bundle = env.base / "state" / NS / "c1"
    (bundle / "bootstrap.json").unlink()
    (bundle / "address").write_text(task.address)
    env.tasks = env.new_manager()
    await env.tasks.load_existing()
    reloaded = await env.tasks.get("c1")
    assert reloaded.bootstrap == BootstrapResult(2, task.address, "ttrpc")
    assert json.loads((bundle / "bootstrap.json").read_text())["version"] == 2


def test_remove_stale_socket_only_removes_sockets_nobody_serves(tmp_path: Path) -> None:
    import socket

    from arun.runtime.manager import remove_stale_socket

    live, dead, plain = tmp_path / "live", tmp_path / "dead", tmp_path / "plain"
    with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as gone:
        listener.bind(str(live))
        listener.listen()
        gone.bind(str(dead))  # bound, never listening: what a killed shim leaves behind
        plain.write_text("not a socket")
        assert remove_stale_socket(f"unix://{dead}") is True
        assert not dead.exists()
        assert remove_stale_socket(f"unix://{live}") is False and live.is_socket()
        assert remove_stale_socket(str(plain)) is False and plain.exists()
        assert remove_stale_socket(f"unix://{tmp_path / 'missing'}") is False
        assert remove_stale_socket("vsock://3:1024") is False
