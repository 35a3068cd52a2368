"""A CRI environment shared by the tests of a module: registry with test images, a private CNI
bridge network and an arun daemon with real runc (``arun.testing.cri.CRIEnv``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from arun.testing.cri import CRIClient, CRIEnv, have_cni

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.runc,
    pytest.mark.overlay,
    pytest.mark.registry,
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            for m in ("integration", "root", "runc", "overlay", "registry"):
                item.add_marker(getattr(pytest.mark, m))


def _requirements_met() -> bool:
    return os.geteuid() == 0 and have_cni() and os.access("/usr/bin/docker-registry", os.X_OK)


@pytest.fixture(scope="module")
def env() -> Iterator[CRIEnv]:
    if not _requirements_met():
        if os.environ.get("ARUN_TEST_STRICT") == "1":
            pytest.fail("CRI integration tests need root, CNI plugins and docker-registry")
        pytest.skip("CRI integration tests need root, CNI plugins and docker-registry")
    e = CRIEnv.start()
    try:
        e.pull("busybox")
        yield e
    finally:
        e.stop()


@pytest.fixture
async def cri(env: CRIEnv) -> AsyncIterator[CRIClient]:
    async with env.client() as c:
        yield c
        await c.remove_all_pods()


def leftovers(env: CRIEnv) -> dict[str, list[str]]:
    """What a daemon leaves on disk while it has pods: shim sockets, task bundles, network
    namespaces, CRI sandbox and container directories (all empty when nothing runs)."""
    assert env.daemon is not None
    state, root = env.daemon.state, env.daemon.root

    def ls(p: Path) -> list[str]:
        try:
            return sorted(x.name for x in p.iterdir())
        except FileNotFoundError:
            return []

    cri_state = state / "io.containerd.grpc.v1.cri"
    cri_root = root / "io.containerd.grpc.v1.cri"
    return {
        "shim sockets": ls(state / "s"),
        "bundles": ls(state / "io.containerd.runtime.v2.task" / "k8s.io"),
        "netns": ls(cri_state / "netns"),
        "sandbox dirs": ls(cri_root / "sandboxes") + ls(cri_state / "sandboxes"),
        "container dirs": ls(cri_root / "containers") + ls(cri_state / "containers"),
    }


def nothing_left(env: CRIEnv) -> bool:
    return not any(leftovers(env).values())
