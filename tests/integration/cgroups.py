"""Cleaning up the cgroups runc leaves behind on purpose."""

from __future__ import annotations

import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def remove_namespace_cgroups(ns: str) -> None:
    """The per-namespace cgroup parents (``/<ns>`` of ``/<ns>/<id>``, the path ctr and arun's
    client give a container) that runc leaves after the namespace's last container, in every v1
    hierarchy (containerd leaves them too). Fails if one cannot be removed."""
    for d in CGROUP_ROOT.glob(f"*/{ns}"):
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(str(p)), reverse=True):
            _rmdir(sub)
        _rmdir(d)


def _rmdir(path: Path) -> None:
    """rmdir, retried while the kernel still tears a cgroup down."""
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    path.rmdir()
