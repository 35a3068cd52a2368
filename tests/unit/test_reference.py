from __future__ import annotations

import pytest

from arun import reference
from arun.errdefs import InvalidArgumentError

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("busybox", "docker.io/library/busybox"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox"),
        ("docker.io/busybox", "docker.io/library/busybox"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox"),
        ("index.docker.io/user/app:v1", "docker.io/user/app:v1"),
        ("user/app", "docker.io/user/app"),
        ("localhost/app", "localhost/app"),
        ("localhost:5000/a/b/c:tag", "localhost:5000/a/b/c:tag"),
        ("127.0.0.1:5000/app@" + D, "127.0.0.1:5000/app@" + D),
        ("quay.io/org/app:v1@" + D, "quay.io/org/app:v1@" + D),
        ("[::1]:5000/app", "[::1]:5000/app"),
        ("Registry.Example.COM/app", "Registry.Example.COM/app"),
        ("a__b/c-d---e.f_g", "docker.io/a__b/c-d---e.f_g"),
    ],
)
def test_parse_normalized(given: str, want: str) -> None:
    assert str(reference.parse_normalized(given)) == want


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Busybox",
        "docker.io/Library/busybox",
        "ab" * 32,
        "busybox:",
        "busybox@sha256:abc",
        "busybox@md5:" + "a" * 32,
        "busybox@sha256:" + "AB" * 32,
        "a//b",
        "-a",
        "busybox:tag:tag",
        "host:port/app",
        "a/" + "b" * 260,
        "busybox:" + "t" * 129,
    ],
)
def test_parse_normalized_rejects(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        reference.parse_normalized(bad)


def test_uppercase_first_component_is_a_domain() -> None:
    # docker's rule: a first component with upper case can only be a host name.
    ref = reference.parse_normalized("MyHost/app")
    assert (ref.domain, ref.path) == ("MyHost", "app")


def test_parse_docker_ref_digest_wins_and_latest_is_added() -> None:
    assert str(reference.parse_docker_ref("busybox")) == "docker.io/library/busybox:latest"
    assert str(reference.parse_docker_ref("busybox:1@" + D)) == "docker.io/library/busybox@" + D
    assert str(reference.parse_docker_ref("busybox:1")) == "docker.io/library/busybox:1"


def test_familiar() -> None:
    assert reference.parse_docker_ref("busybox").familiar() == "busybox:latest"
    assert reference.parse_docker_ref("user/app").familiar() == "user/app:latest"
    assert reference.parse_docker_ref("library/a/b").familiar() == "library/a/b:latest"
    assert reference.parse_docker_ref("localhost:5000/x").familiar() == "localhost:5000/x:latest"


def test_with_tag_and_spec() -> None:
    ref = reference.parse_normalized("busybox").with_tag("1.2")
    spec = ref.spec()
    assert spec.locator == "docker.io/library/busybox"
    assert spec.object == "1.2"
    assert spec.hostname == "docker.io"
    assert spec.repository == "library/busybox"
    with pytest.raises(InvalidArgumentError):
        ref.with_tag("bad tag")


@pytest.mark.parametrize(
    ("given", "locator", "obj", "tag", "digest"),
    [
        ("docker.io/library/busybox:latest", "docker.io/library/busybox", "latest", "latest", ""),
        ("localhost:5000/a/b", "localhost:5000/a/b", "", "", ""),
        ("localhost:5000/a@" + D, "localhost:5000/a", "@" + D, "", D),
        ("localhost:5000/a:v1@" + D, "localhost:5000/a", "v1@" + D, "v1", D),
        ("host/a//b/:v", "host/a/b", "v", "v", ""),
    ],
)
def test_parse_spec(given: str, locator: str, obj: str, tag: str, digest: str) -> None:
    spec = reference.parse_spec(given)
    assert (spec.locator, spec.object, spec.tag, spec.digest) == (locator, obj, tag, digest)


def test_spec_str_round_trips() -> None:
    for s in ("h/a:v", "h:1/a@" + D, "h/a:v@" + D, "h/a"):
        assert str(reference.parse_spec(s)) == s


@pytest.mark.parametrize(
    "bad", ["", "busybox", "http://h/a", "h/", "h/a@sha256:abc", "h/a:bad tag", "h/../a", "h_x/a"]
)
def test_parse_spec_rejects(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        reference.parse_spec(bad)


def test_split_object() -> None:
    assert reference.split_object("v1@" + D) == ("v1", D)
    assert reference.split_object("v1") == ("v1", "")
    assert reference.split_object("@" + D) == ("", D)
