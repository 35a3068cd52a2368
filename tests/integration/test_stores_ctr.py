"""The core stores through real clients: Debian's ctr and grpclib against a real daemon.

Covers content, images (import of an OCI archive built here), snapshots,
leases and events, namespace isolation, garbage collection, a crash in the
middle of an import, and bad input.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from arun.api.containerd.services.containers.v1 import containers_grpc, containers_pb2
from arun.api.containerd.services.content.v1 import content_grpc, content_pb2
from arun.api.containerd.services.images.v1 import images_grpc, images_pb2
from arun.api.containerd.services.leases.v1 import leases_grpc, leases_pb2
from arun.content.local import LocalStore
from arun.testing.daemon import Daemon
from arun.testing.ociarchive import ArchiveImage, Entry, build_archive, busybox_rootfs

pytestmark = [pytest.mark.integration, pytest.mark.ctr]

IMAGE = "docker.io/library/arun-test:latest"
BASE = "docker.io/library/arun-test"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def rows(output: str) -> list[list[str]]:
    """Rows of a ctr table (header dropped), split on whitespace."""
    lines = [line for line in output.splitlines() if line.strip()]
    return [line.split() for line in lines[1:]]


def content_digests(d: Daemon, namespace: str = "default") -> set[str]:
    return {r[0] for r in rows(d.ctr("content", "ls", namespace=namespace).stdout)}


def snapshot_keys(d: Daemon, namespace: str = "default") -> set[str]:
    return {r[0] for r in rows(d.ctr("snapshots", "ls", namespace=namespace).stdout)}


def blobs_on_disk(d: Daemon) -> set[str]:
    root = d.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    return {f"sha256:{p.name}" for p in root.iterdir()} if root.exists() else set()


def ingests_on_disk(d: Daemon) -> list[str]:
    root = d.root / "io.containerd.content.v1.content" / "ingest"
    return [p.name for p in root.iterdir()] if root.exists() else []


async def backend_ingests(d: Daemon) -> list[str]:
    """Refs of the ingests the content backend on disk reports (read directly, not through the daemon)."""
    store = LocalStore(d.root / "io.containerd.content.v1.content")
    return [st.ref for st in await store.list_statuses()]


def overlay_snapshot_dirs(d: Daemon) -> list[str]:
    root = d.root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    return [p.name for p in root.iterdir()] if root.exists() else []


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def md(namespace: str = "default", lease: str | None = None) -> dict[str, str]:
    m = {"containerd-namespace": namespace}
    if lease:
        m["containerd-lease"] = lease
    return m


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> ArchiveImage:
    return build_archive(tmp_path_factory.mktemp("oci") / "arun-test.tar", IMAGE)


def import_image(d: Daemon, img: ArchiveImage, namespace: str = "default") -> None:
    out = d.ctr("images", "import", "--base-name", BASE, str(img.path), namespace=namespace).stdout
    assert f"unpacking {IMAGE} ({img.manifest})...done" in out


# -- content -----------------------------------------------------------------------------------


# Blobs ingested by ctr belong to no image or lease: containerd's garbage collector removes them at
# its next run, and one runs shortly after start-up. Tests that keep such blobs around postpone it.
NO_STARTUP_GC = """
version = 2
[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "1h"
"""


@pytest.fixture
def quiet_daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    return daemon_factory(config_text=NO_STARTUP_GC)


def test_content_ingest_ls_get_label_rm(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    data = b"hello arun\n" * 100
    dgst = sha256(data)
    subprocess.run(
        ["ctr", "--address", str(daemon.address), "content", "ingest", "my-ref"], input=data, check=True
    )
    listed = rows(daemon.ctr("content", "ls").stdout)
    assert [r[0] for r in listed] == [dgst]
    got = subprocess.run(
        ["ctr", "--address", str(daemon.address), "content", "get", dgst], capture_output=True, check=True
    ).stdout
    assert got == data
    daemon.ctr("content", "label", dgst, "purpose=test", "other=x")
    labels = rows(daemon.ctr("content", "ls").stdout)[0][-1]
    assert set(labels.split(",")) == {"purpose=test", "other=x"}
    daemon.ctr("content", "label", dgst, "other=")  # an empty value removes the label
    assert rows(daemon.ctr("content", "ls").stdout)[0][-1] == "purpose=test"
    # another namespace does not see it
    assert content_digests(daemon, "elsewhere") == set()
    r = daemon.ctr("content", "get", dgst, namespace="elsewhere", check=False)
    assert r.returncode != 0 and "not found" in r.stderr
    daemon.ctr("content", "rm", dgst)
    assert content_digests(daemon) == set()


def test_content_commit_mismatch_commits_nothing(daemon: Daemon) -> None:
    data = b"some bytes"
    wrong = sha256(b"other bytes")
    r = subprocess.run(
        ["ctr", "--address", str(daemon.address), "content", "ingest", "--expected-digest", wrong, "bad-ref"],
        input=data,
        capture_output=True,
        check=False,
    )
    assert r.returncode != 0
    assert b"failed precondition" in r.stderr
    r = subprocess.run(
        ["ctr", "--address", str(daemon.address), "content", "ingest", "--expected-size", "3", "bad-size"],
        input=data,
        capture_output=True,
        check=False,
    )
    assert r.returncode != 0 and b"failed precondition" in r.stderr
    assert content_digests(daemon) == set()
    assert blobs_on_disk(daemon) == set()
    # the failed ingests stay, for a resume or an abort
    active = {r[0] for r in rows(daemon.ctr("content", "active").stdout)}
    assert active == {"bad-ref", "bad-size"}


async def test_content_write_read_over_grpc(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    data = os.urandom(3 << 20)
    dgst = sha256(data)
    async with daemon.channel() as ch:
        stub = content_grpc.ContentStub(ch)
        async with stub.Write.open(metadata=md()) as stream:
            await stream.send_message(content_pb2.WriteContentRequest(action=content_pb2.STAT, ref="big"))
            st = await stream.recv_message()
            assert st.offset == 0
            half = len(data) // 2
            await stream.send_message(
                content_pb2.WriteContentRequest(
                    action=content_pb2.WRITE, ref="big", offset=0, data=data[:half]
                )
            )
            assert (await stream.recv_message()).offset == half
            await stream.end()  # the client goes away mid-blob
        # resume where the first session stopped
        status = await stub.Status(content_pb2.StatusRequest(ref="big"), metadata=md())
        assert status.status.offset == half
        async with stub.Write.open(metadata=md()) as stream:
            await stream.send_message(content_pb2.WriteContentRequest(action=content_pb2.STAT, ref="big"))
            assert (await stream.recv_message()).offset == half
            await stream.send_message(
                content_pb2.WriteContentRequest(
                    action=content_pb2.COMMIT,
                    ref="big",
                    offset=half,
                    data=data[half:],
                    total=len(data),
                    expected=dgst,
                    labels={"k": "v"},
                )
            )
            resp = await stream.recv_message()
            assert resp.digest == dgst and resp.offset == len(data)
            await stream.end()
        info = await stub.Info(content_pb2.InfoRequest(digest=dgst), metadata=md())
        assert (info.info.size, dict(info.info.labels)) == (len(data), {"k": "v"})
        chunks = [
            m
            async for m in _read_stream(
                stub, content_pb2.ReadContentRequest(digest=dgst, offset=10, size=2 << 20)
            )
        ]
        assert b"".join(c.data for c in chunks) == data[10 : 10 + (2 << 20)]
        assert chunks[0].offset == 10
        with pytest.raises(GRPCError) as e:
            await stub.Info(content_pb2.InfoRequest(digest=dgst), metadata=md("other"))
        assert e.value.status == Status.NOT_FOUND
        with pytest.raises(GRPCError) as e:
            await stub.Info(content_pb2.InfoRequest(digest="sha256:nothex"), metadata=md())
        assert e.value.status == Status.INVALID_ARGUMENT
        with pytest.raises(GRPCError) as e:
            async for _ in _read_stream(
                stub, content_pb2.ReadContentRequest(digest=dgst, offset=len(data) + 1)
            ):
                pass
        assert e.value.status == Status.OUT_OF_RANGE


async def _read_stream(stub: content_grpc.ContentStub, req: content_pb2.ReadContentRequest) -> Any:
    async with stub.Read.open(metadata=md()) as stream:
        await stream.send_message(req, end=True)
        async for msg in stream:
            yield msg


# -- images and snapshots ----------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.overlay
def test_images_import_ls_check_rm(daemon: Daemon, archive: ArchiveImage) -> None:
    import_image(daemon, archive)
    (image,) = rows(daemon.ctr("images", "ls").stdout)
    assert image[:3] == [IMAGE, "application/vnd.oci.image.manifest.v1+json", archive.manifest]
    check = rows(daemon.ctr("images", "check").stdout)[0]
    assert check[0] == IMAGE and "complete" in check and check[-1] == "true"
    present = content_digests(daemon)
    assert {archive.manifest, archive.config, *archive.layers} <= present
    tree = daemon.ctr("snapshots", "tree").stdout
    c0, c1 = archive.chain_ids
    assert re.search(rf"^ {re.escape(c0)}\n  \\_ {re.escape(c1)}$", tree, re.M), tree
    # the layers are labelled with their uncompressed digests, the config refers to its snapshot
    labels = {r[0]: r[-1] for r in rows(daemon.ctr("content", "ls").stdout)}
    assert labels[archive.layers[0]] == f"containerd.io/uncompressed={archive.diff_ids[0]}"
    assert labels[archive.config] == f"containerd.io/gc.ref.snapshot.overlayfs={c1}"

    # nothing of it is visible from another namespace
    assert rows(daemon.ctr("images", "ls", namespace="other").stdout) == []
    assert content_digests(daemon, "other") == set()
    assert snapshot_keys(daemon, "other") == set()

    daemon.ctr("images", "rm", "--sync", IMAGE)
    assert rows(daemon.ctr("images", "ls").stdout) == []
    assert content_digests(daemon) == set()
    assert snapshot_keys(daemon) == set()
    assert blobs_on_disk(daemon) == set()
    assert overlay_snapshot_dirs(daemon) == []


@pytest.mark.root
@pytest.mark.overlay
def test_images_rm_without_sync_is_collected_soon(daemon: Daemon, archive: ArchiveImage) -> None:
    import_image(daemon, archive)
    daemon.ctr("images", "rm", IMAGE)
    wait_until(lambda: not blobs_on_disk(daemon) and not overlay_snapshot_dirs(daemon), "garbage collection")
    assert content_digests(daemon) == set()


@pytest.mark.root
@pytest.mark.overlay
def test_same_image_in_two_namespaces(daemon: Daemon, archive: ArchiveImage) -> None:
    import_image(daemon, archive, "one")
    import_image(daemon, archive, "two")
    daemon.ctr("images", "rm", "--sync", IMAGE, namespace="one")
    # still complete in the other namespace, blobs and snapshots included
    assert rows(daemon.ctr("images", "check", namespace="two").stdout)[0][-1] == "true"
    assert {archive.manifest, *archive.layers} <= blobs_on_disk(daemon)
    assert set(archive.chain_ids) <= snapshot_keys(daemon, "two")
    assert snapshot_keys(daemon, "one") == set()
    daemon.ctr("images", "rm", "--sync", IMAGE, namespace="two")
    assert blobs_on_disk(daemon) == set()


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "mnt"
    target.mkdir()
    yield target
    if os.path.ismount(target):
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.mark.root
@pytest.mark.overlay
def test_snapshots_prepare_mounts_commit_tree_rm(
    daemon: Daemon, archive: ArchiveImage, mountpoint: Path
) -> None:
    import_image(daemon, archive)
    top = archive.chain_ids[-1]
    daemon.ctr("snapshots", "prepare", "work", top)
    cmd = daemon.ctr("snapshots", "mounts", str(mountpoint), "work").stdout.strip()
    assert cmd.startswith("mount -t overlay overlay "), cmd
    subprocess.run(["sh", "-c", cmd], check=True)
    try:
        assert (mountpoint / "bin" / "busybox").read_bytes()[:4] == b"\x7fELF"
        assert (mountpoint / "etc" / "arun-test").read_text() == "hello from the top layer\n"
        (mountpoint / "new-file").write_text("written in the active snapshot\n")
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    daemon.ctr("snapshots", "commit", "mine", "work")
    tree = daemon.ctr("snapshots", "tree").stdout
    assert re.search(rf"\\_ {re.escape(top)}\n\s+\\_ mine$", tree, re.M), tree
    kinds = {r[0]: r[-1] for r in rows(daemon.ctr("snapshots", "ls").stdout)}
    assert kinds == {**{c: "Committed" for c in archive.chain_ids}, "mine": "Committed"}
    # A view carries no gc.root label (as with containerd, ctr labels only prepare and commit), so
    # a collection still pending from the import (held back by the GC's pause threshold) could
    # take it. Run that collection now: nothing after this point deletes or mutates enough to
    # trigger another one.
    flush = daemon.ctr("leases", "create").stdout.strip()
    daemon.ctr("leases", "rm", "--sync", flush)
    # a view on top of the new snapshot shows the file written before
    daemon.ctr("snapshots", "view", "look", "mine")
    cmd = daemon.ctr("snapshots", "mounts", str(mountpoint), "look").stdout.strip()
    subprocess.run(["sh", "-c", cmd], check=True)
    try:
        assert (mountpoint / "new-file").read_text() == "written in the active snapshot\n"
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
    assert snapshot_keys(daemon, "other") == set()
    r = daemon.ctr("snapshots", "rm", "mine", check=False)
    assert r.returncode != 0 and "child" in r.stderr
    daemon.ctr("snapshots", "rm", "look")
    daemon.ctr("snapshots", "rm", "mine")
    assert snapshot_keys(daemon) == set(archive.chain_ids)
    daemon.ctr("images", "rm", "--sync", IMAGE)
    assert snapshot_keys(daemon) == set()
    assert overlay_snapshot_dirs(daemon) == []


# -- leases ------------------------------------------------------------------------------------


def test_leases_create_ls_rm(daemon: Daemon) -> None:
    lid = daemon.ctr("leases", "create").stdout.strip()
    assert lid
    daemon.ctr("leases", "create", "--id", "mine", "--expires", "0", "team=arun")
    listed = {r[0]: r for r in rows(daemon.ctr("leases", "ls").stdout)}
    assert set(listed) == {lid, "mine"}
    assert listed[lid][-1].startswith("containerd.io/gc.expire=")
    assert listed["mine"][-1] == "team=arun"
    assert rows(daemon.ctr("leases", "ls", namespace="other").stdout) == []
    r = daemon.ctr("leases", "create", "--id", "mine", check=False)
    assert r.returncode != 0 and "already exists" in r.stderr
    daemon.ctr("leases", "rm", lid, "mine")
    assert rows(daemon.ctr("leases", "ls").stdout) == []
    r = daemon.ctr("leases", "rm", "mine", check=False)
    assert r.returncode != 0 and "not found" in r.stderr


async def test_lease_holds_content_until_deleted(daemon: Daemon) -> None:
    daemon.ctr("leases", "create", "--id", "hold", "--expires", "0")
    held = b"held by a lease"
    loose = b"held by nothing"
    async with daemon.channel() as ch:
        stub = content_grpc.ContentStub(ch)
        for data, lease in ((held, "hold"), (loose, None)):
            async with stub.Write.open(metadata=md(lease=lease)) as stream:
                await stream.send_message(
                    content_pb2.WriteContentRequest(
                        action=content_pb2.COMMIT,
                        ref=f"ref-{len(data)}",
                        data=data,
                        total=len(data),
                        expected=sha256(data),
                    )
                )
                await stream.recv_message()
                await stream.end()
        resources = await leases_grpc.LeasesStub(ch).ListResources(
            leases_pb2.ListResourcesRequest(id="hold"), metadata=md()
        )
        assert [(r.id, r.type) for r in resources.resources] == [(sha256(held), "content")]
    # a collection (another lease's sync delete) keeps the leased blob only
    daemon.ctr("leases", "create", "--id", "other")
    daemon.ctr("leases", "rm", "--sync", "other")
    assert content_digests(daemon) == {sha256(held)}
    assert blobs_on_disk(daemon) == {sha256(held)}
    daemon.ctr("leases", "rm", "--sync", "hold")
    assert content_digests(daemon) == set()
    assert blobs_on_disk(daemon) == set()


# -- events ------------------------------------------------------------------------------------


def test_events_of_another_command(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    proc = subprocess.Popen(
        ["ctr", "--address", str(daemon.address), "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    filtered = subprocess.Popen(
        ["ctr", "--address", str(daemon.address), "events", 'topic=="/content/delete"'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # let both subscriptions reach the daemon
        daemon.ctr("namespaces", "create", "probe")
        data = b"event me"
        subprocess.run(
            ["ctr", "--address", str(daemon.address), "-n", "evns", "content", "ingest", "ev"],
            input=data.decode(),
            text=True,
            check=True,
        )
        daemon.ctr("content", "rm", sha256(data), namespace="evns")
        daemon.ctr("leases", "create", "--id", "ev-lease", namespace="evns")
        time.sleep(1.0)
    finally:
        for p in (proc, filtered):
            p.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        fout, _ = filtered.communicate(timeout=10)
    lines = out.splitlines()
    assert any(" /namespaces/create " in line for line in lines), (out, err)
    deletes = [line for line in lines if " evns /content/delete " in line]
    assert len(deletes) == 1 and sha256(data) in deletes[0], out
    flines = [line for line in fout.splitlines() if line.strip()]
    assert len(flines) == 1 and "/content/delete" in flines[0], fout


# -- crash consistency ------------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.overlay
@pytest.mark.slow
def test_kill_during_import_then_gc(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    big = Entry("data/big", "file", os.urandom(40 << 20))
    img = build_archive(
        tmp_path / "big.tar", IMAGE, [busybox_rootfs(), [Entry("data", "dir", mode=0o755), big]]
    )
    d = daemon_factory()
    base = d.base
    imp = subprocess.Popen(
        ["ctr", "--address", str(d.address), "images", "import", "--base-name", BASE, str(img.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # kill -9 while the big layer is being written or unpacked
    wait_until(
        lambda: bool(ingests_on_disk(d)) or bool(overlay_snapshot_dirs(d)) or imp.poll() is not None,
        "the import to start",
        timeout=60,
    )
    assert imp.poll() is None, "the import finished before the daemon could be killed"
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.returncode = -9
    # ctr may wait for the daemon to come back: it is of no further use
    try:
        imp.wait(timeout=2)
    except subprocess.TimeoutExpired:
        imp.kill()
    imp.communicate(timeout=30)

    d2 = daemon_factory(base=base)
    images = rows(d2.ctr("images", "ls").stdout)
    assert images == [] or images[0][2] == img.manifest
    if images:
        assert rows(d2.ctr("images", "check").stdout)[0][-1] in ("true", "false")
    # the interrupted import's lease still holds what it wrote; deleting it lets GC reclaim all
    for lease in rows(d2.ctr("leases", "ls").stdout):
        d2.ctr("leases", "rm", "--sync", lease[0])
    if images:
        d2.ctr("images", "rm", "--sync", IMAGE)
    else:
        d2.ctr("leases", "create", "--id", "trigger")
        d2.ctr("leases", "rm", "--sync", "trigger")
    assert content_digests(d2) == set()
    assert snapshot_keys(d2) == set()
    assert blobs_on_disk(d2) == set()
    # Every ingest the backend can list is gone. (A crash while the backend was still
    # creating an ingest's directory can leave one it cannot read back; no store lists
    # it, containerd's neither, and only the backend itself can recognise and drop it.)
    assert asyncio.run(backend_ingests(d2)) == []
    assert overlay_snapshot_dirs(d2) == []
    assert rows(d2.ctr("content", "active").stdout) == []
    # and the daemon still works: the same import now succeeds
    import_image(d2, img)
    assert rows(d2.ctr("images", "check").stdout)[0][-1] == "true"
    d2.ctr("images", "rm", "--sync", IMAGE)
    assert blobs_on_disk(d2) == set()


# -- bad input ----------------------------------------------------------------------------------


def test_malformed_filters(daemon: Daemon) -> None:
    for args in (
        ["images", "ls", "name=="],
        ["content", "ls", "labels.a==b,,"],
        ["leases", "ls", "id~=["],
        ["containers", "ls", 'labels."unterminated'],
    ):
        r = daemon.ctr(*args, check=False)
        assert r.returncode != 0 and "invalid argument" in r.stderr, (args, r.stderr)


async def test_bad_input_over_grpc(daemon: Daemon) -> None:
    async with daemon.channel() as ch:
        containers = containers_grpc.ContainersStub(ch)
        images = images_grpc.ImagesStub(ch)

        async def code(aw: Any) -> Status:
            try:
                await aw
            except GRPCError as e:
                return e.status
            return Status.OK

        spec = {
            "spec": {"type_url": "types.containerd.io/opencontainers/runtime-spec/1/Spec", "value": b"{}"}
        }
        for bad in ("bad id!", "", "x" * 77, "-lead"):
            req = containers_pb2.CreateContainerRequest(
                container=containers_pb2.Container(
                    id=bad, runtime=containers_pb2.Container.Runtime(name="io.containerd.runc.v2"), **spec
                )
            )
            assert await code(containers.Create(req, metadata=md())) == Status.INVALID_ARGUMENT, bad
        assert (
            await code(containers.List(containers_pb2.ListContainersRequest(filters=["id=="]), metadata=md()))
            == Status.INVALID_ARGUMENT
        )
        assert (
            await code(
                images.Create(
                    images_pb2.CreateImageRequest(
                        image=images_pb2.Image(name="x", target={"digest": "sha256:abc"})
                    ),
                    metadata=md(),
                )
            )
            == Status.INVALID_ARGUMENT
        )
        assert await code(images.List(images_pb2.ListImagesRequest(), metadata=md("bad ns!"))) == (
            Status.INVALID_ARGUMENT
        )
        assert await code(images.List(images_pb2.ListImagesRequest())) == Status.FAILED_PRECONDITION
        assert (
            await code(images.Get(images_pb2.GetImageRequest(name="nope"), metadata=md())) == Status.NOT_FOUND
        )
        ok = containers_pb2.CreateContainerRequest(
            container=containers_pb2.Container(
                id="c1", runtime=containers_pb2.Container.Runtime(name="io.containerd.runc.v2"), **spec
            )
        )
        assert await code(containers.Create(ok, metadata=md())) == Status.OK
        assert await code(containers.Create(ok, metadata=md())) == Status.ALREADY_EXISTS
        assert (
            await code(
                containers.Update(
                    containers_pb2.UpdateContainerRequest(
                        container=ok.container, update_mask={"paths": ["runtime"]}
                    ),
                    metadata=md(),
                )
            )
            == Status.INVALID_ARGUMENT
        )
        streamed = []
        async with containers.ListStream.open(metadata=md()) as stream:
            await stream.send_message(containers_pb2.ListContainersRequest(), end=True)
            async for m in stream:
                streamed.append(m.container.id)
        assert streamed == ["c1"]
    assert rows(daemon.ctr("containers", "ls").stdout)[0][0] == "c1"
    assert rows(daemon.ctr("containers", "ls", namespace="other").stdout) == []
    daemon.ctr("containers", "rm", "c1")


async def write_session(
    stub: content_grpc.ContentStub, *reqs: content_pb2.WriteContentRequest
) -> list[content_pb2.WriteContentResponse]:
    """One Write stream: each request answered in turn; a failure status raises GRPCError."""
    out = []
    async with stub.Write.open(metadata=md()) as stream:
        for req in reqs:
            await stream.send_message(req)
            resp = await stream.recv_message()
            if resp is None:
                break
            out.append(resp)
        await stream.end()
        while await stream.recv_message() is not None:
            pass
    return out


async def test_content_write_protocol_errors(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    W = content_pb2.WriteContentRequest
    async with daemon.channel() as ch:
        stub = content_grpc.ContentStub(ch)
        # a write that skips ahead of the current offset
        with pytest.raises(GRPCError) as e:
            await write_session(
                stub,
                W(action=content_pb2.WRITE, ref="r1", data=b"abc"),
                W(action=content_pb2.WRITE, ref="r1", offset=10, data=b"x"),
            )
        assert e.value.status == Status.OUT_OF_RANGE
        # offset 0 on a non-empty ingest starts it again
        st, done = await write_session(
            stub,
            W(action=content_pb2.STAT, ref="r1"),
            W(action=content_pb2.COMMIT, ref="r1", offset=0, data=b"xyz", total=3),
        )
        assert st.offset == 3
        assert (done.offset, done.digest) == (3, sha256(b"xyz"))
        # a first message without a ref
        with pytest.raises(GRPCError) as e:
            await write_session(stub, W(action=content_pb2.STAT))
        assert e.value.status == Status.INVALID_ARGUMENT
        # the expected blob is already here: ALREADY_EXISTS, and the ingest is not left behind
        with pytest.raises(GRPCError) as e:
            await write_session(stub, W(action=content_pb2.STAT, ref="r2", expected=sha256(b"xyz")))
        assert e.value.status == Status.ALREADY_EXISTS
        statuses = await stub.ListStatuses(content_pb2.ListStatusesRequest(), metadata=md())
        assert list(statuses.statuses) == []
        # abort of an unknown ref
        with pytest.raises(GRPCError) as e:
            await stub.Abort(content_pb2.AbortRequest(ref="nope"), metadata=md())
        assert e.value.status == Status.NOT_FOUND


ROOT = {"containerd.io/gc.root": "2024-01-01T00:00:00Z"}


async def test_snapshots_service_on_native(quiet_daemon: Daemon) -> None:
    from arun.api.containerd.services.snapshots.v1 import snapshots_grpc, snapshots_pb2

    daemon = quiet_daemon
    async with daemon.channel() as ch:
        sn = snapshots_grpc.SnapshotsStub(ch)
        native = "native"
        prep = await sn.Prepare(
            snapshots_pb2.PrepareSnapshotRequest(snapshotter=native, key="k1", labels={"a": "1"}),
            metadata=md(),
        )
        (m,) = prep.mounts
        assert m.type == "bind" and "rw" in m.options
        Path(m.source, "hello").write_text("hi")
        await sn.Commit(
            # as ctr does: a root label, or the next collection would take it
            snapshots_pb2.CommitSnapshotRequest(snapshotter=native, name="c1", key="k1", labels=ROOT),
            metadata=md(),
        )
        view = await sn.View(
            snapshots_pb2.ViewSnapshotRequest(snapshotter=native, key="v1", parent="c1", labels=ROOT),
            metadata=md(),
        )
        assert Path(view.mounts[0].source, "hello").read_text() == "hi"
        stat = await sn.Stat(snapshots_pb2.StatSnapshotRequest(snapshotter=native, key="v1"), metadata=md())
        assert (stat.info.name, stat.info.parent, stat.info.kind) == ("v1", "c1", snapshots_pb2.VIEW)
        upd = await sn.Update(
            snapshots_pb2.UpdateSnapshotRequest(
                snapshotter=native,
                info=snapshots_pb2.Info(name="c1", labels={"x": "y"}),
                update_mask={"paths": ["labels.x"]},
            ),
            metadata=md(),
        )
        assert dict(upd.info.labels) == {**ROOT, "x": "y"}
        usage = await sn.Usage(snapshots_pb2.UsageRequest(snapshotter=native, key="c1"), metadata=md())
        assert usage.size > 0 and usage.inodes > 0
        names = []
        async with sn.List.open(metadata=md()) as stream:
            await stream.send_message(
                snapshots_pb2.ListSnapshotsRequest(snapshotter=native, filters=["kind==committed"]), end=True
            )
            async for resp in stream:
                names.extend(i.name for i in resp.info)
        assert names == ["c1"]
        for req, status in (
            (snapshots_pb2.StatSnapshotRequest(snapshotter="", key="c1"), Status.INVALID_ARGUMENT),
            (snapshots_pb2.StatSnapshotRequest(snapshotter="zfs", key="c1"), Status.INVALID_ARGUMENT),
            (snapshots_pb2.StatSnapshotRequest(snapshotter=native, key="missing"), Status.NOT_FOUND),
        ):
            with pytest.raises(GRPCError) as e:
                await sn.Stat(req, metadata=md())
            assert e.value.status == status
        with pytest.raises(GRPCError) as e:
            await sn.Stat(
                snapshots_pb2.StatSnapshotRequest(snapshotter=native, key="c1"), metadata=md("other")
            )
        assert e.value.status == Status.NOT_FOUND
        await sn.Remove(snapshots_pb2.RemoveSnapshotRequest(snapshotter=native, key="v1"), metadata=md())
        await sn.Remove(snapshots_pb2.RemoveSnapshotRequest(snapshotter=native, key="c1"), metadata=md())
        await sn.Cleanup(snapshots_pb2.CleanupRequest(snapshotter=native), metadata=md())
    native_root = daemon.root / "io.containerd.snapshotter.v1.native" / "snapshots"
    assert list(native_root.iterdir()) == []


@pytest.mark.root
@pytest.mark.overlay
def test_ctr_containers_and_labels(daemon: Daemon, archive: ArchiveImage) -> None:
    import_image(daemon, archive)
    daemon.ctr("containers", "create", IMAGE, "box")
    (row,) = rows(daemon.ctr("containers", "ls").stdout)
    assert row[:3] == ["box", IMAGE, "io.containerd.runc.v2"]
    info = daemon.ctr("containers", "info", "box").stdout
    assert '"SnapshotKey": "box"' in info and '"Snapshotter": "overlayfs"' in info
    assert "box" in snapshot_keys(daemon)
    daemon.ctr("containers", "label", "box", "team=arun")
    assert '"team": "arun"' in daemon.ctr("containers", "info", "box").stdout
    assert rows(daemon.ctr("containers", "ls", "labels.team==arun").stdout)[0][0] == "box"
    assert rows(daemon.ctr("containers", "ls", "labels.team==other").stdout) == []
    # snapshot and image labels through their Update RPCs
    daemon.ctr("snapshots", "label", "box", "snap=1")
    assert '"snap": "1"' in daemon.ctr("snapshots", "info", "box").stdout
    usage = rows(daemon.ctr("snapshots", "usage", "box").stdout)
    assert usage[0][0] == "box"
    daemon.ctr("images", "label", IMAGE, "img=1")
    assert rows(daemon.ctr("images", "ls", "labels.img==1").stdout)[0][0] == IMAGE
    daemon.ctr("containers", "rm", "box")
    assert rows(daemon.ctr("containers", "ls").stdout) == []
    assert "box" not in snapshot_keys(daemon)
    daemon.ctr("images", "rm", "--sync", IMAGE)
    assert overlay_snapshot_dirs(daemon) == []


def test_event_subscribers_do_not_hold_up_shutdown(daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory()
    ev = subprocess.Popen(
        ["ctr", "--address", str(d.address), "events"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(1.0)  # let the subscription reach the daemon
        assert d.stop(keep=True) == 0
        logs = d.logs()
    finally:
        try:
            ev.wait(timeout=30)  # its stream ended with the daemon
        except subprocess.TimeoutExpired:
            ev.kill()
            ev.wait()
        d.cleanup()
    assert "still running" not in logs, logs
