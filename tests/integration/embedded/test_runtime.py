"""arun.Runtime: the plugin graph in the test's own event loop, driven through the client API."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import arun
from arun import errdefs
from arun.bench.images import busybox_image, write_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.integration]

IMAGE = "docker.io/library/embedded:test"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("emb") / "image.tar"
    write_oci_archive(p, [busybox_image(IMAGE)])
    return p


def _mounted_under(d: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(d))]


async def test_temporary_root_comes_and_goes(archive: Path) -> None:
    rt = arun.Runtime(namespace="emb")
    with pytest.raises(errdefs.UnavailableError):
        await rt.version()  # not started
    async with rt:
        assert rt.root is not None and rt.state is not None
        root, state = rt.root, rt.state
        assert (await rt.version()).version == arun.__version__
        [img] = await rt.import_archive(archive)
        assert img.name == IMAGE and await rt.images.is_unpacked(IMAGE)
        ctr = await rt.containers.create("c1", IMAGE, command=["id"], user="nobody", env={"A": "1"})
        info = await ctr.info()
        assert info.spec["process"]["user"] == {"uid": 65534, "gid": 65534}
        assert "A=1" in info.spec["process"]["env"]
        assert (await rt.snapshots().stat("c1")).kind == "active"
        with pytest.raises(errdefs.NotFoundError):
            await rt.containers.get("nope")
        with pytest.raises(errdefs.AlreadyExistsError):
            await rt.containers.create("c1", IMAGE)
        other = rt.client("other-ns")
        assert await other.containers.list() == []
        assert [c.id for c in await rt.containers.list()] == ["c1"]
    assert not root.exists() and not state.exists()
    assert not _mounted_under(root) and not _mounted_under(state)
    with pytest.raises(errdefs.UnavailableError):
        await rt.version()


async def test_given_root_persists(archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with arun.Runtime(root, namespace="keep") as rt:
        await rt.import_archive(archive)
        await rt.containers.create("kept", IMAGE, command=["true"], labels={"k": "v"})
        state = rt.state
    assert root.is_dir() and state is not None and not state.exists()  # the temporary state went
    async with arun.Runtime(root, namespace="keep") as rt:
        assert [(c.id, dict(c.labels)) for c in await rt.containers.list()] == [("kept", {"k": "v"})]
        assert [i.name for i in await rt.images.list()] == [IMAGE]
        await rt.containers.delete("kept")
        await rt.images.delete(IMAGE, sync=True)
    assert not _mounted_under(root)


async def test_events_and_export(archive: Path, tmp_path: Path) -> None:
    async with arun.Runtime(namespace="ev") as rt:
        seen: list[str] = []

        async def watch() -> None:
            async for ev in rt.events('namespace==ev,topic~="/images/"'):
                seen.append(f"{ev.topic} {ev.data.get('name')}")
                if ev.topic == "/images/delete":
                    return

        w = asyncio.ensure_future(watch())
        await asyncio.sleep(0.2)
        await rt.import_archive(archive)
        out = tmp_path / "out.tar"
        await rt.export_archive(out, [IMAGE])
        await rt.images.delete(IMAGE)
        async with asyncio.timeout(10):
            await w
        assert seen == [f"/images/create {IMAGE}", f"/images/delete {IMAGE}"]
        [again] = await rt.import_archive(out)
        assert again.name == IMAGE


async def test_config_text_and_bad_config(tmp_path: Path) -> None:
    async with arun.Runtime(config_text='version = 2\n[debug]\nlevel = "debug"\n') as rt:
        assert (await rt.version()).version
    with pytest.raises(errdefs.InvalidArgumentError):
        async with arun.Runtime(config_text="version = 1\n"):
            pass
    with pytest.raises(errdefs.InvalidArgumentError):
        async with arun.Runtime(config=tmp_path / "missing.toml"):
            pass
    assert not [d for d in os.listdir("/tmp") if d.startswith("arun-rt-") and not os.listdir(f"/tmp/{d}")]


@pytest.mark.runc
async def test_tasks_left_running_die_with_a_temporary_runtime(archive: Path) -> None:
    async with arun.Runtime(namespace="left") as rt:
        await rt.import_archive(archive)
        ctr = await rt.containers.create("sleeper", IMAGE, command=["sleep", "600"])
        task = await ctr.new_task()
        pid = await task.start()
        assert os.path.exists(f"/proc/{pid}")
        root = rt.root
    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}"):
            break
        await asyncio.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}")
    assert root is not None and not root.exists()
