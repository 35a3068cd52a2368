"""The CRI list path: entries built once per state, and the last reply reused only while unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri import container_list, sandbox_list
from arun.cri.listcache import ListReplies
from arun.cri.store.container import Container, ContainerMetadata, ContainerStatus, ContainerStore, StatusFile
from arun.cri.store.sandbox import Sandbox, SandboxMetadata, SandboxState, SandboxStore


def _service() -> Any:
    return SimpleNamespace(containers=ContainerStore(), sandboxes=SandboxStore(), list_replies=ListReplies())


def _container(tmp: Path, cid: str, sid: str, labels: dict[str, str]) -> Container:
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=cid), image=api_pb2.ImageSpec(image="busybox"), labels=labels
    )
    md = ContainerMetadata(id=cid, name=cid, sandbox_id=sid, config=cfg, image_ref="sha256:" + "1" * 64)
    return Container(md, StatusFile.create(tmp / cid, ContainerStatus(created_at=5)))


def _list(c: Any, f: api_pb2.ContainerFilter | None = None) -> api_pb2.ListContainersResponse:
    req = api_pb2.ListContainersRequest(filter=f) if f is not None else api_pb2.ListContainersRequest()
    return asyncio.run(container_list.list_containers(c, req))


def test_container_list_follows_state_and_membership(tmp_path: Path) -> None:
    c = _service()
    a = _container(tmp_path, "aaaa", "pod1", {"app": "x"})
    b = _container(tmp_path, "bbbb", "pod2", {"app": "y"})
    c.containers.add(a)
    c.containers.add(b)
    first = _list(c)
    assert [(x.id, x.state, x.labels["app"]) for x in first.containers] == [
        ("aaaa", api_pb2.CONTAINER_CREATED, "x"),
        ("bbbb", api_pb2.CONTAINER_CREATED, "y"),
    ]
    assert first.containers[0].image.image == "busybox"
    assert _list(c) is first  # nothing changed: the same reply

    a.status.update(started_at=7, pid=42)
    second = _list(c)
    assert second is not first
    assert [x.state for x in second.containers] == [api_pb2.CONTAINER_RUNNING, api_pb2.CONTAINER_CREATED]
    # The earlier reply is untouched.
    assert first.containers[0].state == api_pb2.CONTAINER_CREATED

    running = api_pb2.ContainerFilter(state=api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_RUNNING))
    assert [x.id for x in _list(c, running).containers] == ["aaaa"]
    by_label = api_pb2.ContainerFilter(label_selector={"app": "y"})
    assert [x.id for x in _list(c, by_label).containers] == ["bbbb"]
    assert [x.id for x in _list(c, api_pb2.ContainerFilter(pod_sandbox_id="pod2")).containers] == ["bbbb"]
    assert [x.id for x in _list(c, api_pb2.ContainerFilter(id="aa")).containers] == ["aaaa"]
    assert [x.id for x in _list(c).containers] == ["aaaa", "bbbb"]

    c.containers.delete("aaaa")
    assert [x.id for x in _list(c).containers] == ["bbbb"]
    # Not created yet (created_at 0): not listed.
    c.containers.add(
        Container(
            _container(tmp_path, "cccc", "pod1", {}).metadata,
            StatusFile.create(tmp_path / "c2", ContainerStatus()),
        )
    )
    assert [x.id for x in _list(c).containers] == ["bbbb"]


def test_sandbox_list_follows_state(tmp_path: Path) -> None:
    c = _service()
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="p", uid="u", namespace="n"), labels={"k": "v"}
    )
    sb = Sandbox(SandboxMetadata(id="pod1", name="p_n_u_0", config=cfg, created_at=9))
    c.sandboxes.add(sb)

    def ls(f: api_pb2.PodSandboxFilter | None = None) -> api_pb2.ListPodSandboxResponse:
        req = api_pb2.ListPodSandboxRequest(filter=f) if f is not None else api_pb2.ListPodSandboxRequest()
        return asyncio.run(sandbox_list.list_pod_sandbox(c, req))

    assert list(ls().items) == []  # INIT: not visible yet
    sb.state = SandboxState.READY
    first = ls()
    assert [(x.id, x.state, x.labels["k"]) for x in first.items] == [("pod1", api_pb2.SANDBOX_READY, "v")]
    assert ls() is first
    sb.mark_exited(0, 11)
    assert [x.state for x in ls().items] == [api_pb2.SANDBOX_NOTREADY]
    ready = api_pb2.PodSandboxFilter(state=api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY))
    assert list(ls(ready).items) == []
    assert [x.id for x in ls(api_pb2.PodSandboxFilter(label_selector={"k": "v"})).items] == ["pod1"]
