"""The Task service with a recording runc and mounter: lifecycle, states, event order, exits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from arun import errdefs
from arun.api.containerd.runtime.task.v2 import shim_pb2 as v2
from arun.api.containerd.runtime.task.v3 import shim_pb2 as v3
from arun.api.containerd.types.runc.options import oci_pb2
from arun.api.containerd.types.task import task_pb2 as types_pb2
from arun.shim.events import EventQueue
from arun.shim.reaper import Exit, Reaper
from arun.shim.service import Shim, TaskAPI
from arun.testing.shim import FakeRunc, RecordingForwarder, RecordingMounter


@dataclass
class Env:
    shim: Shim
    api: TaskAPI
    api3: TaskAPI
    runc: FakeRunc
    mounter: RecordingMounter
    forwarder: RecordingForwarder
    events: EventQueue
    reaper: Reaper
    tmp: Path
    shutdowns: list[bool]

    def bundle(self, id: str, *, own_pid_ns: bool = True) -> str:
        b = self.tmp / id
        (b / "rootfs").mkdir(parents=True)
        namespaces = [{"type": "mount"}] + ([{"type": "pid"}] if own_pid_ns else [])
        (b / "config.json").write_text(json.dumps({"linux": {"namespaces": namespaces}}))
        return str(b)

    def exit(self, pid: int, status: int) -> None:
        self.reaper.dispatch([Exit(pid, status, time.time_ns())])

    async def topics(self) -> list[str]:
        assert await self.events.flush(5)
        return self.forwarder.topics()

    async def create(self, id: str, **kw: object) -> int:
        req = v2.CreateTaskRequest(id=id, bundle=self.bundle(id, **kw))  # type: ignore[arg-type]
        req.rootfs.add(type="bind", source=str(self.tmp), options=["rbind", "ro"])
        return int((await self.api.Create(req)).pid)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    reaper = Reaper()  # not installed: exits are dispatched by the tests
    runc = FakeRunc()
    mounter = RecordingMounter()
    forwarder = RecordingForwarder()
    events = EventQueue(forwarder, "testns", retry_delay=0.01)
    events.start()
    shutdowns: list[bool] = []
    shim = Shim(
        namespace="testns",
        reaper=reaper,
        events=events,
        mounter=mounter,
        runc_factory=lambda opts, ns, bundle: runc,
        cgroup_loader=lambda pid: None,
        on_shutdown=lambda: shutdowns.append(True),
    )
    apis = (TaskAPI(shim, "containerd.task.v2.Task"), TaskAPI(shim, "containerd.task.v3.Task"))
    yield Env(shim, *apis, runc, mounter, forwarder, events, reaper, tmp_path, shutdowns)
    shim.close()
    await events.close(1)


async def test_lifecycle_and_event_order(env: Env) -> None:
    pid = await env.create("c1")
    assert env.mounter.mounted and env.mounter.mounted[0][1].endswith("c1/rootfs")
    st = await env.api.State(v2.StateRequest(id="c1"))
    assert (st.status, st.pid) == (types_pb2.CREATED, pid)
    assert st.exited_at.seconds < 0  # Go's zero time: not exited
    assert (await env.api.Start(v2.StartRequest(id="c1"))).pid == pid
    waiter = asyncio.create_task(env.api.Wait(v2.WaitRequest(id="c1")))
    await asyncio.sleep(0)
    assert not waiter.done()
    env.exit(pid, 3)
    resp = await asyncio.wait_for(waiter, 5)
    assert resp.exit_status == 3 and resp.exited_at.seconds > 0
    st = await env.api.State(v2.StateRequest(id="c1"))
    assert st.status == types_pb2.STOPPED
    d = await env.api.Delete(v2.DeleteRequest(id="c1"))
    assert (d.pid, d.exit_status) == (pid, 3)
    assert await env.topics() == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    _, exit_ev = env.forwarder.events[2]
    assert (exit_ev.container_id, exit_ev.id, exit_ev.pid, exit_ev.exit_status) == ("c1", "c1", pid, 3)
    assert env.runc.names() == ["create", "start", "delete"]
    assert env.mounter.mounted == [] and env.mounter.unmounted
    with pytest.raises(errdefs.NotFoundError):
        await env.api.State(v2.StateRequest(id="c1"))


async def test_exit_during_start_is_published_after_start(env: Env) -> None:
    pid = await env.create("c1")
    # the init dies while `runc start` is still returning
    env.runc.hooks["start"] = lambda: env.exit(pid, 0)
    await env.api.Start(v2.StartRequest(id="c1"))
    await env.api.Wait(v2.WaitRequest(id="c1"))
    assert await env.topics() == ["/tasks/create", "/tasks/start", "/tasks/exit"]


async def test_exit_during_create_is_reported_after_create(env: Env) -> None:
    env.runc.hooks["create"] = lambda: env.exit(env.runc.next_pid, 137)
    await env.create("c1")
    st = await env.api.State(v2.StateRequest(id="c1"))
    assert (st.status, st.exit_status) == (types_pb2.STOPPED, 137)
    assert await env.topics() == ["/tasks/create", "/tasks/exit"]


async def test_exec_lifecycle_and_pids(env: Env) -> None:
    pid = await env.create("c1")
    await env.api.Start(v2.StartRequest(id="c1"))
    spec = json.dumps({"args": ["sh"], "cwd": "/"}).encode()
    req = v2.ExecProcessRequest(id="c1", exec_id="e1")
    req.spec.value = spec
    await env.api.Exec(req)
    with pytest.raises(errdefs.AlreadyExistsError):
        await env.api.Exec(req)
    st = await env.api.State(v2.StateRequest(id="c1", exec_id="e1"))
    assert st.status == types_pb2.CREATED and st.id == "e1"
    epid = (await env.api.Start(v2.StartRequest(id="c1", exec_id="e1"))).pid
    assert epid != pid
    assert env.runc.calls[-1].args["process"]["args"] == ["sh"]
    pids = await env.api.Pids(v2.PidsRequest(id="c1"))
    got = {p.pid: p.info for p in pids.processes}
    assert set(got) == {pid, epid}
    assert got[pid].type_url == ""
    assert got[epid].type_url == "containerd.runc.v1.ProcessDetails"
    assert oci_pb2.ProcessDetails.FromString(got[epid].value).exec_id == "e1"
    env.exit(epid, 0)
    assert (await env.api.Wait(v2.WaitRequest(id="c1", exec_id="e1"))).exit_status == 0
    await env.api.Delete(v2.DeleteRequest(id="c1", exec_id="e1"))
    with pytest.raises(errdefs.NotFoundError):
        await env.api.State(v2.StateRequest(id="c1", exec_id="e1"))
    assert await env.topics() == [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit",
    ]


async def test_init_exit_is_last_and_kills_the_rest_in_a_shared_pid_namespace(env: Env) -> None:
    pid = await env.create("c1", own_pid_ns=False)
    await env.api.Start(v2.StartRequest(id="c1"))
    req = v2.ExecProcessRequest(id="c1", exec_id="e1")
    req.spec.value = b'{"args": ["sleep", "1000"]}'
    await env.api.Exec(req)
    epid = (await env.api.Start(v2.StartRequest(id="c1", exec_id="e1"))).pid
    env.exit(pid, 0)
    await asyncio.sleep(0.05)
    # the init's exit waits for the exec's; runc was asked to kill everything
    assert ("kill", {"signal": 9, "all": True}) in [(c.name, c.args) for c in env.runc.calls]
    assert "/tasks/exit" not in await env.topics()
    # no exec may start once the init is gone
    req2 = v2.ExecProcessRequest(id="c1", exec_id="e2")
    req2.spec.value = b'{"args": ["true"]}'
    with pytest.raises(errdefs.FailedPreconditionError):
        await env.api.Exec(req2)
    env.exit(epid, 137)
    await env.api.Wait(v2.WaitRequest(id="c1"))
    topics = await env.topics()
    assert topics[-2:] == ["/tasks/exit", "/tasks/exit"]
    assert [e.id for t, e in env.forwarder.events if t == "/tasks/exit"] == ["e1", "c1"]


async def test_state_machine_refusals(env: Env) -> None:
    await env.create("c1")
    with pytest.raises(errdefs.FailedPreconditionError, match="cannot pause task 'c1' in 'created' state"):
        await env.api.Pause(v2.PauseRequest(id="c1"))
    with pytest.raises(errdefs.FailedPreconditionError, match="cannot resume"):
        await env.api.Resume(v2.ResumeRequest(id="c1"))
    await env.api.Start(v2.StartRequest(id="c1"))
    with pytest.raises(errdefs.FailedPreconditionError, match="cannot start task 'c1' in 'running' state"):
        await env.api.Start(v2.StartRequest(id="c1"))
    with pytest.raises(errdefs.FailedPreconditionError, match="cannot delete"):
        await env.api.Delete(v2.DeleteRequest(id="c1"))
    await env.api.Pause(v2.PauseRequest(id="c1"))
    st = await env.api.State(v2.StateRequest(id="c1"))
    assert st.status == types_pb2.PAUSED
    req = v2.ExecProcessRequest(id="c1", exec_id="e1")
    req.spec.value = b'{"args": ["true"]}'
    with pytest.raises(errdefs.FailedPreconditionError, match="exec in"):
        await env.api.Exec(req)
    await env.api.Resume(v2.ResumeRequest(id="c1"))
    assert (await env.topics())[-2:] == ["/tasks/paused", "/tasks/resumed"]


def test_invalid_transition_names_both_states() -> None:
    from arun.shim.process.states import Status, check_transition

    with pytest.raises(errdefs.FailedPreconditionError, match="'stopped' to 'running'"):
        check_transition(Status.STOPPED, Status.RUNNING)
    check_transition(Status.CREATED, Status.RUNNING)


async def test_exit_while_paused_resumes_the_cgroup(env: Env) -> None:
    pid = await env.create("c1")
    await env.api.Start(v2.StartRequest(id="c1"))
    await env.api.Pause(v2.PauseRequest(id="c1"))
    env.exit(pid, 137)
    await env.api.Wait(v2.WaitRequest(id="c1"))
    await asyncio.sleep(0.01)
    assert env.runc.names()[-1] == "resume"
    st = await env.api.State(v2.StateRequest(id="c1"))
    assert st.status == types_pb2.STOPPED


async def test_failed_create_leaves_nothing(env: Env) -> None:
    env.runc.fail["create"] = errdefs.UnknownError("runc create failed: boom")
    with pytest.raises(errdefs.UnknownError, match="boom"):
        await env.create("c1")
    assert env.mounter.mounted == []
    assert env.shim.containers == {}
    assert await env.topics() == []
    # the id can be used again
    await env.create("c1b")


def _create_request(env: Env, id: str, stdout: str) -> v2.CreateTaskRequest:
    req = v2.CreateTaskRequest(id=id, bundle=env.bundle(id), stdout=stdout)
    req.rootfs.add(type="bind", source=str(env.tmp), options=["rbind", "ro"])
    return req


async def test_stdio_that_cannot_be_opened_takes_back_what_runc_created(env: Env) -> None:
    # The client's FIFOs are opened while `runc create` runs: when that fails and runc did
    # create the container, it is deleted again and nothing is left.
    missing = str(env.tmp / "no-such-dir" / "stdout")
    with pytest.raises(FileNotFoundError):
        await env.api.Create(_create_request(env, "c1", missing))
    assert env.runc.names() == ["create", "delete"]
    assert env.runc.calls[1].args == {"force": True}
    assert env.mounter.mounted == [] and env.shim.containers == {}
    assert await env.topics() == []


async def test_a_runc_failure_is_reported_before_a_stdio_failure(env: Env) -> None:
    env.runc.fail["create"] = errdefs.UnknownError("runc create failed: boom")
    missing = str(env.tmp / "no-such-dir" / "stdout")
    with pytest.raises(errdefs.UnknownError, match="boom"):
        await env.api.Create(_create_request(env, "c1", missing))
    assert env.runc.names() == ["create"]
    assert env.mounter.mounted == [] and env.shim.containers == {}


async def test_stdout_file_is_written_once_created(env: Env) -> None:
    out = env.tmp / "logs" / "out.log"
    pid = int((await env.api.Create(_create_request(env, "c1", f"file://{out}"))).pid)
    assert pid and out.exists()
    assert env.runc.calls[0].args["stdio"][1] is not None  # runc got the pipe's write end


async def test_failed_mount_leaves_nothing(env: Env) -> None:
    env.mounter.fail_on = str(env.tmp)
    with pytest.raises(errdefs.InvalidArgumentError):
        await env.create("c1")
    assert env.runc.calls == [] and env.shim.containers == {}


async def test_bad_requests(env: Env) -> None:
    with pytest.raises(errdefs.InvalidArgumentError):
        await env.api.Create(v2.CreateTaskRequest(id="../evil", bundle=env.bundle("x")))
    with pytest.raises(errdefs.InvalidArgumentError, match=r"config\.json"):
        await env.api.Create(v2.CreateTaskRequest(id="c1", bundle=str(env.tmp / "nowhere")))
    with pytest.raises(errdefs.NotFoundError):
        await env.api.Kill(v2.KillRequest(id="nope", signal=9))
    await env.create("c1")
    with pytest.raises(errdefs.AlreadyExistsError):
        await env.api.Create(v2.CreateTaskRequest(id="c1", bundle=env.bundle("c1-again")))
    bad = v2.ExecProcessRequest(id="c1", exec_id="e1")
    bad.spec.value = b"not json"
    with pytest.raises(errdefs.InvalidArgumentError):
        await env.api.Exec(bad)
    with pytest.raises(errdefs.NotFoundError):
        await env.api.Start(v2.StartRequest(id="c1", exec_id="missing"))
    opts = v2.CreateTaskRequest(id="c2", bundle=env.bundle("c2"))
    opts.options.type_url = "example.com/Unknown"
    with pytest.raises(errdefs.InvalidArgumentError, match="runtime options"):
        await env.api.Create(opts)


async def test_v3_face_answers_with_v3_messages(env: Env) -> None:
    pid = await env.create("c1")
    st = await env.api3.State(v3.StateRequest(id="c1"))
    assert type(st).FULL_NAME == "containerd.task.v3.StateResponse" and st.pid == pid
    assert env.api3.service_name == "containerd.task.v3.Task"
    assert env.api.service_name == "containerd.task.v2.Task"
    c = await env.api3.Connect(v3.ConnectRequest(id="c1"))
    assert type(c).FULL_NAME == "containerd.task.v3.ConnectResponse" and c.task_pid == pid and c.shim_pid > 0


async def test_shutdown_only_without_containers(env: Env) -> None:
    pid = await env.create("c1")
    await env.api.Shutdown(v2.ShutdownRequest(id="c1"))
    assert env.shutdowns == []
    await env.api.Start(v2.StartRequest(id="c1"))
    env.exit(pid, 0)
    await env.api.Wait(v2.WaitRequest(id="c1"))
    await env.api.Delete(v2.DeleteRequest(id="c1"))
    await env.api.Shutdown(v2.ShutdownRequest(id="c1"))
    assert env.shutdowns == [True]


async def test_update_and_checkpoint(env: Env) -> None:
    await env.create("c1")
    req = v2.UpdateTaskRequest(id="c1")
    req.resources.value = json.dumps({"memory": {"limit": 1 << 20}}).encode()
    await env.api.Update(req)
    assert env.runc.calls[-1].args["resources"] == {"memory": {"limit": 1 << 20}}
    import shutil

    if shutil.which("criu") is None:
        with pytest.raises(errdefs.UnimplementedError, match="criu"):
            await env.api.Checkpoint(v2.CheckpointTaskRequest(id="c1", path="/tmp/x"))


async def test_event_queue_retries_in_order_and_drops_after_budget() -> None:
    fwd = RecordingForwarder()
    q = EventQueue(fwd, "ns", retry_delay=0.001)
    q.start()
    from arun.api.containerd.events import task_pb2 as ev

    fwd.failures = 2
    q.send(ev.TaskStart(container_id="a", pid=1))
    q.send(ev.TaskExit(container_id="a", id="a", pid=1))
    assert await q.flush(5)
    assert fwd.topics() == ["/tasks/start", "/tasks/exit"]
    assert fwd.attempts == 4
    fwd.failures = 5
    q.send(ev.TaskDelete(container_id="a"))
    q.send(ev.TaskOOM(container_id="b"))
    assert await q.flush(5)
    assert fwd.topics()[-1] == "/tasks/oom" and q.dropped == 1
    await q.close(1)
    assert fwd.closed


async def test_waiters_return_when_a_never_started_process_is_deleted(env: Env) -> None:
    pid = await env.create("c1")
    req = v2.ExecProcessRequest(id="c1", exec_id="e1")
    req.spec.value = b'{"args": ["true"]}'
    await env.api.Start(v2.StartRequest(id="c1"))
    await env.api.Exec(req)
    exec_wait = asyncio.create_task(env.api.Wait(v2.WaitRequest(id="c1", exec_id="e1")))
    await asyncio.sleep(0)
    await env.api.Delete(v2.DeleteRequest(id="c1", exec_id="e1"))
    assert (await asyncio.wait_for(exec_wait, 5)).exit_status == 255
    # a created container deleted before start: runc delete kills it, the exit still arrives
    await env.create("c2")
    c2 = env.shim.containers["c2"].init.pid
    init_wait = asyncio.create_task(env.api.Wait(v2.WaitRequest(id="c2")))
    await asyncio.sleep(0)
    await env.api.Delete(v2.DeleteRequest(id="c2"))
    env.exit(c2, 137)
    assert (await asyncio.wait_for(init_wait, 5)).exit_status == 137
    assert pid != c2


async def test_kill_queued_behind_delete_says_not_found(env: Env) -> None:
    # A Kill that waits for the process lock while Delete runs finds the task deleted: NotFound
    # (which the CRI stop path treats as "already gone"), not FailedPrecondition.
    pid = await env.create("c1")
    await env.api.Start(v2.StartRequest(id="c1"))
    env.exit(pid, 0)
    await env.api.Wait(v2.WaitRequest(id="c1"))
    init = env.shim.containers["c1"].init
    async with init._lock:  # queue Delete, then Kill, behind the process lock
        delete = asyncio.ensure_future(env.api.Delete(v2.DeleteRequest(id="c1")))
        await asyncio.sleep(0.01)
        kill = asyncio.ensure_future(env.api.Kill(v2.KillRequest(id="c1", signal=9, all=True)))
        await asyncio.sleep(0.01)
    await delete
    with pytest.raises(errdefs.NotFoundError, match="deleted"):
        await kill


async def test_exec_kill_after_delete_says_not_found(env: Env) -> None:
    await env.create("c1")
    await env.api.Start(v2.StartRequest(id="c1"))
    req = v2.ExecProcessRequest(id="c1", exec_id="e1")
    req.spec.value = json.dumps({"args": ["true"], "cwd": "/"}).encode()
    await env.api.Exec(req)
    p = env.shim.containers["c1"].execs["e1"]
    await env.api.Delete(v2.DeleteRequest(id="c1", exec_id="e1"))
    with pytest.raises(errdefs.NotFoundError, match="deleted"):
        await p.kill(9)
    with pytest.raises(errdefs.NotFoundError, match="deleted"):
        await p.delete()
