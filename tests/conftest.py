"""Shared test configuration: requirement markers that skip with a reason, or fail under
ARUN_TEST_STRICT=1 (CI), so that a missing requirement can never turn the suite green."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest

STRICT = os.environ.get("ARUN_TEST_STRICT") == "1"


def _have_overlay() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


_REQUIREMENTS = {
    "root": (lambda: os.geteuid() == 0, "needs root"),
    "runc": (lambda: shutil.which("runc") is not None, "needs runc on PATH"),
    "overlay": (lambda: os.geteuid() == 0 and _have_overlay(), "needs root and overlayfs"),
    "registry": (
        lambda: os.access(os.environ.get("ARUN_TEST_REGISTRY", "/usr/bin/docker-registry"), os.X_OK),
        "needs docker-registry (Debian package docker-registry)",
    ),
    "ctr": (lambda: shutil.which("ctr") is not None, "needs containerd's ctr client on PATH"),
    "containerd": (lambda: shutil.which("containerd") is not None, "needs the containerd daemon on PATH"),
    "ksm": (
        lambda: os.path.isdir("/sys/kernel/mm/ksm"),
        "needs a kernel with same-page merging (CONFIG_KSM)",
    ),
}

_KSM_RUN = "/sys/kernel/mm/ksm/run"


@pytest.fixture(scope="session", autouse=True)
def _restore_ksm() -> Iterator[None]:
    """Daemons started by tests switch the kernel's same-page merging on (their default); put
    the host's setting back when the session ends."""
    try:
        with open(_KSM_RUN) as fh:
            before = fh.read().strip()
    except OSError:
        before = ""
    yield
    if before == "0" and os.geteuid() == 0:
        with contextlib.suppress(OSError), open(_KSM_RUN, "w") as fh:
            fh.write("0\n")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name, (check, reason) in _REQUIREMENTS.items():
        if item.get_closest_marker(name) is not None and not check():
            if STRICT:
                pytest.fail(f"requirement missing under ARUN_TEST_STRICT=1: {reason}")
            pytest.skip(reason)
