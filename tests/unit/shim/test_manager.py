"""The runtime v2 ``start`` address rule and bundle files, shared by the binary and the zygote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from arun.shim import manager


def test_shim_socket_hashes_the_pod_group(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}})
    )
    address, path = manager.shim_socket("k8s.io", "app", str(tmp_path), "/run/a.sock", "/s")
    digest = hashlib.sha256(b"/run/a.sock/k8s.io/pod1").hexdigest()
    assert address == f"unix:///s/{digest}" and path == f"/s/{digest}"
    # no annotation: the task's own id is its group
    other, _ = manager.shim_socket("k8s.io", "app", str(tmp_path / "none"), "/run/a.sock", "/s")
    assert other == "unix:///s/" + hashlib.sha256(b"/run/a.sock/k8s.io/app").hexdigest()


@pytest.mark.parametrize(
    ("namespace", "id", "socket_dir", "message"),
    [
        ("", "a", "/s", "namespace cannot be empty"),
        ("ns", "", "/s", "id cannot be empty"),
        ("ns", "a", "/" + "d" * 60, "longer than a unix socket address allows"),
    ],
)
def test_shim_socket_refuses(tmp_path: Path, namespace: str, id: str, socket_dir: str, message: str) -> None:
    with pytest.raises(manager.UsageError, match=message):
        manager.shim_socket(namespace, id, str(tmp_path), "/run/a.sock", socket_dir)


def test_write_atomic_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "address"
    target.write_text("old")
    manager.write_atomic(str(target), "unix:///s/x")
    assert target.read_text() == "unix:///s/x"
    assert [p.name for p in tmp_path.iterdir()] == ["address"]  # no temporary left
