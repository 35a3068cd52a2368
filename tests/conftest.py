"""Shared test configuration: requirement markers that skip with a reason, or fail under
ARUN_TEST_STRICT=1 (CI), so that a missing requirement can never turn the suite green."""

from __future__ import annotations

import os
import shutil

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
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name, (check, reason) in _REQUIREMENTS.items():
        if item.get_closest_marker(name) is not None and not check():
            if STRICT:
                pytest.fail(f"requirement missing under ARUN_TEST_STRICT=1: {reason}")
            pytest.skip(reason)
