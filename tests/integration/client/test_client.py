"""arun.Client against real daemons: images, containers, tasks with stdio, exec, kill, events, errors."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
from pathlib import Path

import pytest

from arun import errdefs
from arun.bench.daemons import PrivateArun, PrivateContainerd
from arun.client import Client, Mount, PullProgress, RuncOptions, TaskStatus

from ..cgroups import remove_namespace_cgroups

pytestmark = [
    pytest.mark.root,
    pytest.mark.runc,
    pytest.mark.containerd,
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="package"),
]


def _uid() -> str:
    return "c-" + os.urandom(4).hex()


async def test_version_and_namespaces(any_daemon: PrivateContainerd | PrivateArun) -> None:
    async with Client(str(any_daemon.address)) as c:
        v = await c.version()
        assert v.version
        names = [n.name for n in await c.namespaces()]
        assert names == sorted(names)


async def test_unreachable_daemon_is_one_clear_error(tmp_path: Path) -> None:
    async with Client(str(tmp_path / "nothing.sock")) as c:
        with pytest.raises(errdefs.UnavailableError) as e:
            await c.version()
    assert "nothing.sock" in str(e.value) and "\n" not in str(e.value)


async def test_import_list_get_delete(client: Client, busybox: str) -> None:
    images = await client.images.list()
    assert [i.name for i in images] == [busybox]
    info = await client.images.get(busybox)
    m = await client.images.manifest(busybox)
    assert m.descriptor.digest == info.target.digest
    assert await client.images.is_unpacked(busybox)
    cfg = await client.images.config(busybox)
    assert cfg["config"]["Cmd"] == ["sh"]
    # containerd's GC labels: manifest → config and layers; config → the unpacked snapshot.
    minfo = await client.content.info(m.descriptor.digest)
    assert minfo.labels["containerd.io/gc.ref.content.config"] == m.config_descriptor.digest
    assert minfo.labels["containerd.io/gc.ref.content.l.0"] == m.layers[0].digest
    cinfo = await client.content.info(m.config_descriptor.digest)
    assert cinfo.labels[f"containerd.io/gc.ref.snapshot.{client.snapshotter}"] == m.chain_id
    await client.images.delete(busybox, sync=True)
    with pytest.raises(errdefs.NotFoundError):
        await client.images.get(busybox)


async def test_export_then_import_round_trip(client: Client, busybox: str, tmp_path: Path) -> None:
    out = tmp_path / "export.tar"
    n = await client.export_archive(out, [busybox])
    assert n == out.stat().st_size > 0
    target = (await client.images.get(busybox)).target.digest
    await client.images.delete(busybox, sync=True)
    made = await client.import_archive(out)
    assert [(i.name, i.target.digest) for i in made] == [(busybox, target)]


@pytest.mark.needs_tasks
async def test_run_collects_output_and_exit_code(client: Client, busybox: str) -> None:
    ctr = await client.containers.create(
        _uid(),
        busybox,
        command=["sh", "-c", "echo out; echo err >&2; echo $GREETING; exit 3"],
        env={"GREETING": "hi"},
    )
    out, err = io.BytesIO(), io.BytesIO()
    task = await ctr.new_task(stdout=out, stderr=err)
    assert await task.status() == TaskStatus.CREATED
    await task.start()
    status = await task.wait()
    assert status.code == 3 and status.exited_at is not None
    assert out.getvalue() == b"out\nhi\n"
    assert err.getvalue() == b"err\n"
    assert (await task.delete()).code == 3
    await ctr.delete()
    with pytest.raises(errdefs.NotFoundError):
        await client.containers.get(ctr.id)


@pytest.mark.needs_tasks
async def test_stdin_is_passed_and_closed(client: Client, busybox: str) -> None:
    ctr = await client.containers.create(_uid(), busybox, command=["sh", "-c", "cat; echo done"])
    out = io.BytesIO()
    data = b"x" * 200_000 + b"\nend\n"  # more than a pipe holds
    task = await ctr.new_task(stdin=data, stdout=out)
    await task.start()
    await task.close_stdin()
    assert (await task.wait()).code == 0
    assert out.getvalue() == data + b"done\n"
    await task.delete()
    await ctr.delete()


@pytest.mark.needs_tasks
async def test_terminal(client: Client, busybox: str) -> None:
    ctr = await client.containers.create(
        _uid(), busybox, command=["sh", "-c", "test -t 0 && test -t 1 && echo tty"], tty=True
    )
    out = io.BytesIO()
    task = await ctr.new_task(stdout=out)
    await task.start()
    assert (await task.wait()).code == 0
    assert out.getvalue().replace(b"\r", b"") == b"tty\n"
    await task.delete()
    await ctr.delete()


@pytest.mark.needs_tasks
async def test_exec_kill_and_delete_running(client: Client, busybox: str) -> None:
    ctr = await client.containers.create(_uid(), busybox, command=["sleep", "1000"], hostname="boxy")
    task = await ctr.new_task()
    await task.start()
    assert await task.status() == TaskStatus.RUNNING
    out = io.BytesIO()
    p = await task.exec("e1", ["sh", "-c", "hostname; echo $X; exit 7"], env=["X=from-exec"], stdout=out)
    assert (await p.wait()).code == 7
    assert out.getvalue() == b"boxy\nfrom-exec\n"
    assert (await p.delete()).code == 7
    pids = await task.pids()
    assert task.pid in {x.pid for x in pids}
    # A running task blocks the container's removal, and its own without force.
    with pytest.raises(errdefs.FailedPreconditionError):
        await ctr.delete()
    with pytest.raises(errdefs.FailedPreconditionError):
        await task.delete()
    waiter = asyncio.ensure_future(task.wait())
    await task.kill(signal.SIGKILL)
    status = await waiter
    assert status.code == 128 + signal.SIGKILL
    await task.delete()
    await ctr.delete()


@pytest.mark.needs_tasks
async def test_force_delete_kills(client: Client, busybox: str) -> None:
    ctr = await client.containers.create(_uid(), busybox, command=["sleep", "1000"])
    task = await ctr.new_task()
    await task.start()
    status = await task.delete(force=True)
    assert status.code == 128 + signal.SIGKILL
    await ctr.delete()


@pytest.mark.needs_tasks
async def test_mounts_user_cwd(client: Client, busybox: str, tmp_path: Path) -> None:
    (tmp_path / "hello").write_text("from the host\n")
    tmp_path.chmod(0o755)  # readable by the container's user (nobody)
    ctr = await client.containers.create(
        _uid(),
        busybox,
        command=["sh", "-c", "cat /data/hello; id -u; id -g; pwd"],
        mounts=[Mount(type="bind", source=str(tmp_path), target="/data", options=("rbind", "ro"))],
        user="nobody",
        cwd="/tmp",
    )
    assert ctr.cached_info.spec["process"]["user"] == {"uid": 65534, "gid": 65534}
    out = io.BytesIO()
    task = await ctr.new_task(stdout=out)
    await task.start()
    assert (await task.wait()).code == 0
    assert out.getvalue() == b"from the host\n65534\n65534\n/tmp\n"
    await task.delete()
    await ctr.delete()


async def test_container_records_and_their_events(client: Client, busybox: str) -> None:
    cid = _uid()
    seen: list[tuple[str, str, str]] = []

    async def watch() -> None:
        async for ev in client.events(f'namespace=={client.namespace},topic~="/containers/"'):
            seen.append((ev.topic, ev.type, str(ev.data.get("id", ""))))
            if ev.topic == "/containers/delete":
                return

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0.3)  # the subscription is in place before anything happens
    ctr = await client.containers.create(
        cid, busybox, command=["true"], user="nobody", labels={"team": "a"}, env=["A=1"], hostname="h1"
    )
    info = await ctr.info()
    assert info.image == busybox and info.runtime == "io.containerd.runc.v2"
    assert info.labels == {"team": "a"} and info.snapshot_key == cid
    assert info.spec["process"]["user"] == {
        "uid": 65534,
        "gid": 65534,
    }  # looked up in the image's /etc/passwd
    assert "A=1" in info.spec["process"]["env"] and info.spec["hostname"] == "h1"
    assert info.runtime_options is not None and info.runtime_options.root == client.runtime_options.root  # type: ignore[union-attr]
    snap = await client.snapshots().stat(cid)
    assert snap.kind == "active" and snap.parent == (await client.images.manifest(busybox)).chain_id
    await ctr.set_labels({"team": "", "tier": "web"})
    assert (await ctr.info()).labels == {"tier": "web"}
    assert [c.id for c in await client.containers.list("labels.tier==web")] == [cid]
    await ctr.delete()
    with pytest.raises(errdefs.NotFoundError):
        await client.snapshots().stat(cid)
    async with asyncio.timeout(10):
        await watcher
    assert [(t, k) for t, k, _ in seen] == [
        ("/containers/create", "containerd.events.ContainerCreate"),
        ("/containers/update", "containerd.events.ContainerUpdate"),
        ("/containers/delete", "containerd.events.ContainerDelete"),
    ]
    assert {i for _, _, i in seen} == {cid}


@pytest.mark.needs_tasks
async def test_events_of_a_run(client: Client, busybox: str) -> None:
    cid = _uid()
    seen: list[tuple[str, str]] = []
    ready = asyncio.Event()

    async def watch() -> None:
        async for ev in client.events(f'namespace=={client.namespace},topic~="/tasks/"'):
            if ev.data.get("container_id") == cid:
                seen.append((ev.topic, ev.type))
            if ev.topic == "/tasks/delete" and ev.data.get("container_id") == cid:
                return

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0.3)  # the subscription is in place before anything happens
    ready.set()
    ctr = await client.containers.create(cid, busybox, command=["true"])
    task = await ctr.new_task()
    await task.start()
    await task.wait()
    await task.delete()
    async with asyncio.timeout(10):
        await watcher
    await ctr.delete()
    topics = [t for t, _ in seen]
    assert topics[:2] == ["/tasks/create", "/tasks/start"]
    assert "/tasks/exit" in topics and topics[-1] == "/tasks/delete"
    assert ("/tasks/exit", "containerd.events.TaskExit") in seen


async def test_missing_image_creates_nothing(client: Client) -> None:
    with pytest.raises(errdefs.NotFoundError) as e:
        await client.containers.create(_uid(), "docker.io/library/nope:missing", command=["true"])
    assert "\n" not in str(e.value)
    assert await client.containers.list() == []
    assert [s for s in await client.snapshots().list() if s.kind == "active"] == []


@pytest.mark.needs_tasks
async def test_failed_start_leaves_nothing(client: Client, busybox: str) -> None:
    ctr = await client.containers.create(_uid(), busybox, command=["/no/such/binary"])
    with pytest.raises(errdefs.ArunError) as e:
        task = await ctr.new_task(stdout=io.BytesIO())
        try:
            await task.start()
        finally:
            with contextlib.suppress(errdefs.ArunError):
                await task.delete(force=True)
    assert "no/such/binary" in str(e.value)
    with pytest.raises(errdefs.NotFoundError):
        await ctr.task()
    await ctr.delete()
    assert await client.containers.list() == []


async def test_bad_ids_are_invalid_argument(client: Client, busybox: str) -> None:
    with pytest.raises(errdefs.InvalidArgumentError):
        await client.containers.create("bad id!", busybox)
    with pytest.raises(errdefs.AlreadyExistsError):
        cid = _uid()
        await client.containers.create(cid, busybox, command=["true"])
        await client.containers.create(cid, busybox, command=["true"])
    assert len(await client.containers.list()) == 1


async def test_import_streams_big_layers_and_refuses_corrupt_archives(client: Client, tmp_path: Path) -> None:
    import io as _io
    import json
    import tarfile

    from arun.bench.images import BuiltImage, _config, _Entry, _tar, write_oci_archive

    big = os.urandom(3 << 20)  # does not compress: a 3 MiB blob, streamed from the archive
    image = BuiltImage(
        "docker.io/library/big:1", _config([], ["true"]), [_tar([_Entry("blob", "file", big)])]
    )
    good = write_oci_archive(tmp_path / "big.tar", [image])
    [img] = await client.import_archive(good)
    m = await client.images.manifest(img.name)
    assert m.layers[0].size > 3 << 20
    assert (await client.content.info(m.layers[0].digest)).size == m.layers[0].size
    await client.images.delete(img.name, sync=True)

    # The same archive with one byte of the big layer changed.
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            f = src.extractfile(member) if member.isfile() else None
            data = f.read() if f else b""
            if member.isfile() and member.size > 1 << 20:
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            dst.addfile(member, _io.BytesIO(data) if f else None)
    with pytest.raises(errdefs.DataLossError) as e:
        await client.import_archive(bad)
    assert "does not match" in str(e.value)
    assert await client.images.list() == []
    assert await client.content.list() == []  # the failed import's lease was collected on the spot
    with tarfile.open(bad) as t:
        index = json.loads(t.extractfile("index.json").read())  # type: ignore[union-attr]
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/big:1"


@pytest.mark.needs_tasks
async def test_closing_the_client_closes_forgotten_stdio(
    endpoint: tuple[str, Path], busybox_archive: Path
) -> None:
    address, runc_root = endpoint
    ns = "t-" + os.urandom(5).hex()
    c = Client(address, namespace=ns, runtime_options=RuncOptions(root=str(runc_root)))
    try:
        [img] = await c.import_archive(busybox_archive)
        ctr = await c.containers.create("forgotten", img.name, command=["sleep", "1000"])
        task = await ctr.new_task(stdout=io.BytesIO(), stdin=b"")
        assert task.io is not None
        fifo_dir = Path(task.io.paths.stdout).parent
        assert fifo_dir.is_dir()
        await task.start()
    finally:
        await c.close()  # without deleting the task: its FIFOs go with the client
    assert not fifo_dir.exists()
    async with Client(address, namespace=ns) as c2:
        t = await c2.task("forgotten")
        await t.delete(force=True)
        await c2.containers.delete("forgotten")
        await c2.images.delete(img.name, sync=True)
        await c2.delete_namespace(ns)
    remove_namespace_cgroups(ns)


@pytest.mark.registry
async def test_pull_from_a_registry_with_and_without_credentials(client: Client, tmp_path: Path) -> None:
    """arun pulls through its transfer service; containerd 1.6 has none, so the client pulls itself."""
    import base64

    from arun.testing.images import build_image, busybox_layer, push_raw
    from arun.testing.registry import HtpasswdAuth, registry

    image = build_image([busybox_layer()], config={"Cmd": ["sh"]})
    async with registry(tmp_path / "open") as reg:
        await push_raw(reg.url, "lib/bb", "v1", image)
        ref = f"{reg.host}/lib/bb:v1"
        seen: list[PullProgress] = []
        info = await client.pull(ref, progress=seen.append, plain_http=True)
        assert info.name == ref and info.target.digest == image.digest
        assert await client.images.is_unpacked(ref)
        # Per-layer progress: the layer is named, and its reports reach its full size.
        layer = image.layers[0]
        mine = [p for p in seen if p.name.endswith(layer.digest)]
        assert mine, [(p.name, p.status) for p in seen]
        assert all(p.total == len(layer.blob) for p in mine)
        assert any(p.offset == p.total for p in mine) and "downloading" in {p.status for p in mine}
        ctr = await client.containers.create(_uid(), ref, command=["true"])
        await ctr.delete()
        with pytest.raises(errdefs.NotFoundError):
            await client.pull(f"{reg.host}/lib/bb:nope", plain_http=True)
        await client.images.delete(ref, sync=True)
    async with registry(tmp_path / "locked", auth=HtpasswdAuth({"alice": "s3cret"})) as reg:
        basic = "Basic " + base64.b64encode(b"alice:s3cret").decode()
        await push_raw(reg.url, "lib/bb", "v1", image, headers={"Authorization": basic})
        ref = f"{reg.host}/lib/bb:v1"
        with pytest.raises((errdefs.UnauthenticatedError, errdefs.PermissionDeniedError)):
            await client.pull(ref, plain_http=True)
        assert await client.images.list() == []
        info = await client.pull(ref, plain_http=True, credentials=("alice", "s3cret"))
        assert info.name == ref
        await client.images.delete(ref, sync=True)
