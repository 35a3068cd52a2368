"""Fixtures for the client tests: private daemons (containerd 1.6 and arun) and clients on them.

Every test gets its own namespace; teardown removes what the test left there
(tasks, containers, snapshots, images) and the namespace itself, then checks
nothing is left.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from arun import errdefs
from arun.bench.daemons import PrivateArun, PrivateContainerd
from arun.bench.images import busybox_image, write_oci_archive
from arun.client import Client, RuncOptions

from ..cgroups import remove_namespace_cgroups

# Which daemons serve what the tests need. A test marked ``needs_tasks`` runs against
# TASKS, any other test taking ``endpoint``/``client`` against STORES.
STORES = ["containerd", "arun"]  # images, content, snapshots, leases, diff, containers, events
TASKS = ["containerd", "arun"]
ALL = ["containerd", "arun"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_tasks: the test runs tasks (only daemons serving the tasks service)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "endpoint" in metafunc.fixturenames:
        kinds = TASKS if metafunc.definition.get_closest_marker("needs_tasks") else STORES
        metafunc.parametrize("endpoint", kinds, indirect=True)


BUSYBOX = "docker.io/library/busybox:arun"


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def containerd() -> AsyncIterator[PrivateContainerd]:
    d = await PrivateContainerd.start()
    try:
        yield d
    finally:
        await d.stop()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def arun_daemon() -> AsyncIterator[PrivateArun]:
    d = await PrivateArun.start(import_images=False)
    try:
        yield d
    finally:
        code = await d.stop()
        assert code == 0, d.logs()


@pytest.fixture(scope="package")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "busybox.tar"
    write_oci_archive(path, [busybox_image(BUSYBOX)])
    return path


def _daemon(request: pytest.FixtureRequest, name: str) -> PrivateContainerd | PrivateArun:
    d: PrivateContainerd | PrivateArun = request.getfixturevalue(
        "containerd" if name == "containerd" else "arun_daemon"
    )
    return d


@pytest.fixture
def endpoint(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """(address, runc root) of a daemon for the full suite."""
    d = _daemon(request, request.param)
    return str(d.address), d.base / "runc"


@pytest.fixture(params=ALL)
def any_daemon(request: pytest.FixtureRequest) -> PrivateContainerd | PrivateArun:
    """Each daemon, for what all of them serve."""
    return _daemon(request, request.param)


async def _empty_namespace(c: Client) -> list[str]:
    """Remove everything in the client's namespace; what could not be removed."""
    left: list[str] = []
    with contextlib.suppress(errdefs.ArunError):
        for t in await c.tasks():
            with contextlib.suppress(errdefs.ArunError):
                task = await c.task(t.id)
                await task.delete(force=True)
    with contextlib.suppress(errdefs.ArunError):
        for info in await c.containers.list():
            try:
                await c.containers.delete(info.id)
            except errdefs.ArunError as e:
                left.append(f"container {info.id}: {e}")
    with contextlib.suppress(errdefs.ArunError):
        for img in await c.images.list():
            with contextlib.suppress(errdefs.NotFoundError):
                await c.images.delete(img.name, sync=True)
    with contextlib.suppress(errdefs.ArunError):
        # Active snapshots (containers' and half-done unpacks) must be gone; committed ones follow GC.
        for s in await c.snapshots().list():
            if s.kind == "active":
                left.append(f"active snapshot {s.name}")
    return left


@pytest_asyncio.fixture(loop_scope="package")
async def client(endpoint: tuple[str, Path]) -> AsyncIterator[Client]:
    address, runc_root = endpoint
    ns = "t-" + os.urandom(5).hex()
    c = Client(address, namespace=ns, runtime_options=RuncOptions(root=str(runc_root)), timeout=60)
    try:
        yield c
    finally:
        left = await _empty_namespace(c)
        with contextlib.suppress(errdefs.NotFoundError):
            await c.delete_namespace(ns)
        await c.close()
        remove_namespace_cgroups(ns)
        assert not left, f"left behind in {ns}: {left}"


@pytest_asyncio.fixture(loop_scope="package")
async def busybox(client: Client, busybox_archive: Path) -> str:
    """The busybox image, imported and unpacked in the test's namespace."""
    made = await client.import_archive(busybox_archive)
    assert [i.name for i in made] == [BUSYBOX]
    return BUSYBOX
