"""Example: an arun embedded in a pytest fixture, no daemon and no socket.

``arun.Runtime()`` boots arun's plugins in the test's event loop on a
temporary root; everything the test creates disappears with it. Copy this
pattern into your own suite::

    @pytest_asyncio.fixture
    async def rt():
        async with arun.Runtime(namespace="my-tests") as rt:
            yield rt
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import arun
from arun.bench.images import busybox_image, write_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.runc, pytest.mark.overlay, pytest.mark.integration]


@pytest_asyncio.fixture
async def rt(tmp_path: Path) -> AsyncIterator[arun.Runtime]:
    async with arun.Runtime(namespace="examples") as rt:
        # An image without a registry: built here, imported like `ctr images import`.
        archive = tmp_path / "busybox.tar"
        write_oci_archive(archive, [busybox_image("docker.io/library/busybox:example")])
        await rt.import_archive(archive)
        yield rt


async def test_a_container_from_an_image(rt: arun.Runtime) -> None:
    ctr = await rt.containers.create(
        "web",
        "docker.io/library/busybox:example",
        command=["httpd", "-f"],
        env={"PORT": "80"},
        labels={"app": "web"},
    )
    spec = (await ctr.info()).spec
    assert spec["process"]["args"] == ["httpd", "-f"]
    assert "PORT=80" in spec["process"]["env"]
    assert [c.id for c in await rt.containers.list("labels.app==web")] == ["web"]
    await ctr.delete()


async def test_run_a_real_container(rt: arun.Runtime) -> None:
    ctr = await rt.containers.create(
        "hello",
        "docker.io/library/busybox:example",
        command=["sh", "-c", "echo hello from $WHO; exit 3"],
        env={"WHO": "a fixture"},
    )
    out = io.BytesIO()
    task = await ctr.new_task(stdout=out)
    await task.start()
    status = await task.wait()
    assert (status.code, out.getvalue()) == (3, b"hello from a fixture\n")
    await task.delete()
    await ctr.delete()


async def test_exec_into_a_running_container(rt: arun.Runtime) -> None:
    ctr = await rt.containers.create("svc", "docker.io/library/busybox:example", command=["sleep", "600"])
    task = await ctr.new_task()
    await task.start()
    out = io.BytesIO()
    proc = await task.exec("probe", ["sh", "-c", "echo ready"], stdout=out)
    assert (await proc.wait()).code == 0 and out.getvalue() == b"ready\n"
    await proc.delete()
    # Leaving it running is fine too: the fixture's runtime kills what is left when it closes.
    await task.kill("SIGKILL")
    await task.wait()
    await task.delete()
    await ctr.delete()
