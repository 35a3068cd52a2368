"""Issue 4 items shown through Debian's ctr that test_stores_ctr.py does not cover on its own:

* a Write resumed by ctr itself after the first ctr was killed mid-blob (ctr asks Status for the
  offset and sends only the rest);
* ctr events sees containerd's topic for every kind of mutation (containers, images, snapshots,
  content, namespaces), including the removals GC makes;
* a hostile layer imported with ctr: the daemon's diff service refuses it with a clear error and
  nothing outside the snapshot is written.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from arun.api.containerd.services.content.v1 import content_grpc, content_pb2
from arun.testing.daemon import Daemon
from arun.testing.ociarchive import Entry, build_archive, busybox_rootfs

from .test_stores_ctr import BASE, IMAGE, NO_STARTUP_GC, blobs_on_disk, import_image, rows, sha256, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.ctr]


def _active(d: Daemon) -> dict[str, int]:
    """The daemon's ingests (ListStatuses): ref → bytes received so far (ctr prints them rounded)."""

    async def statuses() -> dict[str, int]:
        async with d.channel() as ch:
            resp = await content_grpc.ContentStub(ch).ListStatuses(
                content_pb2.ListStatusesRequest(), metadata={"containerd-namespace": "default"}
            )
        return {st.ref: st.offset for st in resp.statuses}

    listed = asyncio.run(statuses())
    assert set(listed) == {r[0] for r in rows(d.ctr("content", "active").stdout)}
    return listed


def test_ctr_resumes_an_interrupted_ingest(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    d = daemon_factory(config_text=NO_STARTUP_GC)
    data = os.urandom(3 << 20)
    dgst = sha256(data)
    half = 1 << 20
    base = ["ctr", "--address", str(d.address), "content", "ingest"]
    sized = ["--expected-size", str(len(data)), "--expected-digest", dgst]
    first = subprocess.Popen([*base, *sized, "resume-me"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert first.stdin is not None
    first.stdin.write(data[:half])
    first.stdin.flush()
    try:
        wait_until(lambda: _active(d).get("resume-me") == half, "the first half to reach the daemon")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stdin.close()
        assert first.stderr is not None
        first.stderr.close()
    assert _active(d) == {"resume-me": half}
    assert blobs_on_disk(d) == set()
    # The second ctr gets a seekable stdin whose first half is garbage: it can only produce the
    # expected digest if it asks the daemon where to resume and skips what is already there.
    src = tmp_path / "second.bin"
    src.write_bytes(b"\0" * half + data[half:])
    with open(src, "rb") as f:
        r = subprocess.run([*base, *sized, "resume-me"], stdin=f, capture_output=True, check=False)
    assert r.returncode == 0, r.stderr
    assert _active(d) == {}
    got = subprocess.run(
        ["ctr", "--address", str(d.address), "content", "get", dgst], capture_output=True, check=True
    ).stdout
    assert got == data
    # Starting over without a resume point (a non-seekable stdin of the same garbage) cannot match.
    d.ctr("content", "rm", dgst)
    first = subprocess.Popen([*base, *sized, "again"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = first.communicate(b"\0" * half + data[half:], timeout=60)
    assert first.returncode != 0 and b"failed precondition" in err, err
    assert blobs_on_disk(d) == set()


class EventLog:
    """``ctr events`` running in the background; ``lines()`` stops it and returns its output."""

    def __init__(self, d: Daemon) -> None:
        self.proc = subprocess.Popen(
            ["ctr", "--address", str(d.address), "events"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # let the subscription reach the daemon

    def lines(self) -> list[list[str]]:
        time.sleep(1.0)
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        # "<date> <time> <tz offset> <tz> <namespace> <topic> <event json>"
        return [line.split(None, 6)[4:] for line in out.splitlines() if line.strip()]


@pytest.mark.root
@pytest.mark.overlay
def test_every_mutation_publishes_its_topic(daemon: Daemon, tmp_path: Path) -> None:
    img = build_archive(tmp_path / "img.tar", IMAGE)
    ns = "evtopics"
    ev = EventLog(daemon)
    try:
        daemon.ctr("namespaces", "create", ns)
        daemon.ctr("namespaces", "label", ns, "a=b")
        import_image(daemon, img, ns)  # content writes, /images/create, /snapshot/prepare + commit
        daemon.ctr("images", "label", IMAGE, "x=y", namespace=ns)  # /images/update
        daemon.ctr("containers", "create", IMAGE, "box", namespace=ns)  # /containers/create
        daemon.ctr("containers", "label", "box", "x=y", namespace=ns)  # /containers/update
        daemon.ctr("containers", "rm", "box", namespace=ns)  # /containers/delete, /snapshot/remove
        # prepare, not view: ctr labels only prepared snapshots as GC roots (as ctr does against
        # containerd), and the GC the container's removal scheduled may run at any moment
        daemon.ctr("snapshots", "prepare", "look", img.chain_ids[-1], namespace=ns)  # /snapshot/prepare
        daemon.ctr("snapshots", "rm", "look", namespace=ns)  # /snapshot/remove
        daemon.ctr("images", "rm", "--sync", IMAGE, namespace=ns)  # /images/delete; GC: /snapshot/remove
        blob = b"deleted by hand"
        subprocess.run(
            ["ctr", "--address", str(daemon.address), "-n", ns, "content", "ingest", "by-hand"],
            input=blob,
            check=True,
        )
        daemon.ctr("content", "rm", sha256(blob), namespace=ns)  # /content/delete
        daemon.ctr("namespaces", "rm", ns)  # /namespaces/delete
    finally:
        got = ev.lines()
    # The namespaces service publishes in the namespace of the request (ctr's "default"), as
    # containerd does; the event names the namespace it is about.
    seen = [
        (ns if row[1].startswith("/namespaces/") and f'"name":"{ns}"' in row[2] else row[0], row[1])
        for row in got
        if len(row) == 3
    ]
    topics = {t for n, t in seen if n == ns}
    expected = {
        "/images/create",
        "/images/update",
        "/images/delete",
        "/containers/create",
        "/containers/update",
        "/containers/delete",
        "/snapshot/prepare",
        "/snapshot/commit",
        "/snapshot/remove",
        "/content/delete",
        "/namespaces/create",
        "/namespaces/update",
        "/namespaces/delete",
    }
    assert expected <= topics, (expected - topics, got)
    by_topic: dict[str, list[str]] = {}
    for row in got:
        if len(row) == 3 and row[0] == ns:
            by_topic.setdefault(row[1], []).append(row[2])
    assert by_topic["/content/delete"] == [f'{{"digest":"{sha256(blob)}"}}'], by_topic["/content/delete"]
    # GC removed both committed layers, each with its own event (as containerd's GC does; like
    # containerd it publishes nothing for the blobs it removes)
    removed = " ".join(by_topic["/snapshot/remove"])
    for chain in img.chain_ids:
        assert chain in removed, (chain, by_topic["/snapshot/remove"])
    # the events happened in the order of the commands
    order = [t for n, t in seen if n == ns]
    assert order.index("/images/create") < order.index("/containers/create") < order.index("/images/delete")
    assert order[-1] == "/namespaces/delete"


@pytest.mark.root
@pytest.mark.overlay
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_ctr_import_of_a_hostile_layer_is_refused(daemon: Daemon, tmp_path: Path, how: str) -> None:
    victim = Path("/tmp") / f"arun-audit45-victim-{uuid.uuid4().hex}"
    victim.mkdir()
    try:
        (victim / "sentinel").write_text("untouched\n")
        before = sorted(os.listdir(victim))
        evil: list[Entry]
        if how == "dotdot":
            evil = [Entry("../" * 40 + str(victim).lstrip("/") + "/evil", data=b"pwned")]
        elif how == "absolute":
            evil = [Entry(str(victim) + "/evil", data=b"pwned")]
        else:
            evil = [Entry("link", "symlink", str(victim).encode()), Entry("link/evil", data=b"pwned")]
        img = build_archive(tmp_path / "evil.tar", IMAGE, [busybox_rootfs(), evil])
        r = daemon.ctr("images", "import", "--base-name", BASE, str(img.path), check=False)
        assert r.returncode != 0, r.stdout
        assert "invalid argument" in r.stderr and "invalid tar entry" in r.stderr, r.stderr
        assert sorted(os.listdir(victim)) == before
        assert (victim / "sentinel").read_text() == "untouched\n"
        # only the good bottom layer was committed; the failed extraction left no snapshot. The
        # bottom one was held only by ctr's lease, which ended with ctr: the GC may have taken
        # it already (it runs at its next interval tick, as containerd's does).
        kinds = {row[0]: row[-1] for row in rows(daemon.ctr("snapshots", "ls").stdout)}
        assert kinds in ({img.chain_ids[0]: "Committed"}, {}), kinds
        # ctr created the image record before unpacking (as with containerd); removing it and
        # collecting leaves nothing behind
        daemon.ctr("images", "rm", "--sync", IMAGE, check=False)
        assert rows(daemon.ctr("snapshots", "ls").stdout) == []
        assert blobs_on_disk(daemon) == set()
        snaps = daemon.root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
        assert not snaps.exists() or list(snaps.iterdir()) == []
    finally:
        for p in sorted(victim.iterdir()):
            p.unlink()
        victim.rmdir()
