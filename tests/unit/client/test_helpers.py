"""The client's pure helpers: endpoints, references, chain ids, platforms, GC labels, signals."""

from __future__ import annotations

import hashlib
import signal

import pytest

from arun import errdefs
from arun.client import Platform, chain_id, normalize_reference, parse_endpoint, parse_signal
from arun.client.archive import children_labels


def test_endpoint_parsing() -> None:
    assert parse_endpoint("unix:///run/a.sock").path == "/run/a.sock"
    assert parse_endpoint("/run/a.sock").path == "/run/a.sock"
    ep = parse_endpoint("tcp://127.0.0.1:5000")
    assert (ep.host, ep.port) == ("127.0.0.1", 5000)
    assert str(parse_endpoint("unix:///x")) == "unix:///x"
    for bad in ("", "ftp://x", "relative.sock", "unix://", "tcp://host"):
        with pytest.raises(errdefs.InvalidArgumentError):
            parse_endpoint(bad)


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("user/app", "docker.io/user/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("registry.k8s.io/pause:3.6", "registry.k8s.io/pause:3.6"),
        ("quay.io/a/b@sha256:" + "0" * 64, "quay.io/a/b@sha256:" + "0" * 64),
    ],
)
def test_normalize_reference(ref: str, want: str) -> None:
    assert normalize_reference(ref) == want


@pytest.mark.parametrize("bad", ["", "a b", "/x", "x:", "Upper/Case"])
def test_bad_references(bad: str) -> None:
    with pytest.raises(errdefs.InvalidArgumentError):
        normalize_reference(bad)


def test_chain_id() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_id([a]) == a
    assert chain_id([a, b]) == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    with pytest.raises(errdefs.InvalidArgumentError):
        chain_id([])


def test_platform_matching() -> None:
    p = Platform.parse("linux/amd64")
    assert p.matches({"os": "linux", "architecture": "amd64"})
    assert p.matches(None)
    assert not p.matches({"os": "linux", "architecture": "arm64"})
    arm = Platform.parse("linux/arm64/v8")
    assert arm == Platform("linux", "arm64") and arm.matches({"os": "linux", "architecture": "aarch64"})
    v7 = Platform.parse("linux/arm/v7")
    assert v7.matches({"os": "linux", "architecture": "arm", "variant": "v7"})
    assert not v7.matches({"os": "linux", "architecture": "arm", "variant": "v6"})
    with pytest.raises(errdefs.InvalidArgumentError):
        Platform.parse("linux/")


def test_children_gc_labels_as_containerd_names_them() -> None:
    labels = children_labels(
        [
            {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:c"},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:l0"},
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:l1"},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:m0"},
            {"mediaType": "application/x-other", "digest": "sha256:o"},
        ]
    )
    assert labels == {
        "containerd.io/gc.ref.content.config": "sha256:c",
        "containerd.io/gc.ref.content.l.0": "sha256:l0",
        "containerd.io/gc.ref.content.l.1": "sha256:l1",
        "containerd.io/gc.ref.content.m.0": "sha256:m0",
        "containerd.io/gc.ref.content.0": "sha256:o",
    }


def test_signals() -> None:
    assert parse_signal(9) == 9
    assert parse_signal("KILL") == parse_signal("SIGKILL") == parse_signal("9") == signal.SIGKILL
    with pytest.raises(errdefs.InvalidArgumentError):
        parse_signal("SIGNOPE")
