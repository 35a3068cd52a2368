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

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import arun
from arun.bench.images import busybox_image, write_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.integration]


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
