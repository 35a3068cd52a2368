"""The Transfer and Streaming services over a real gRPC unix socket, driven by
``arun images pull|push`` (the CLI's client code), pulling from docker-registry into the
in-memory stores."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.events import RecvRequest, listen
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from arun import errdefs, namespaces
from arun.cmd import images as cli
from arun.errdefs import grpc as errgrpc
from arun.services.streaming.grpc import StreamingServicer
from arun.services.transfer.grpc import TransferServicer
from arun.streaming.manager import StreamManager
from arun.testing import images as im
from arun.testing.memstores import MemStores
from arun.testing.registry import RegistryServer, TokenAuth, registry
from arun.transfer.local import LocalTransfer, TransferConfig

pytestmark = pytest.mark.registry


@contextlib.asynccontextmanager
async def serve(tmp: Path, ms: MemStores) -> AsyncIterator[str]:
    """The two services on a socket, with the namespace header and errdefs mapping that the
    daemon's middleware provides."""
    transfer = LocalTransfer(TransferConfig(stall_timeout="30s"), lambda sn: ms.stores())
    # One manager shared by both services.
    manager = StreamManager()
    server = Server([TransferServicer(transfer, manager), StreamingServicer(manager)])

    async def on_request(ev: RecvRequest) -> None:
        ns = ev.metadata.get(namespaces.GRPC_HEADER)
        namespaces.set_current(str(ns) if ns else None)
        inner = ev.method_func

        async def wrapped(stream: Any) -> None:
            try:
                await inner(stream)
            except errdefs.ArunError as exc:
                status, msg = errgrpc.to_grpclib(exc)
                raise GRPCError(status, msg) from exc  # type: ignore[arg-type]

        ev.method_func = wrapped

    listen(server, RecvRequest, on_request)
    sock = str(tmp / "arun.sock")
    await server.start(path=sock)
    try:
        yield sock
    finally:
        server.close()
        await server.wait_closed()
        await transfer.close()


def args(sock: str, cmd: str, ref: str, **kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "address": sock,
        "namespace": "testns",
        "images_command": cmd,
        "ref": ref,
        "plain_http": True,
        "user": None,
        "hosts_dir": "",
        "platform": [],
        "quiet": False,
        "snapshotter": "",
        "skip_unpack": False,
        "label": [],
        "local": "",
    }
    base.update(kw)
    return argparse.Namespace(**base)


async def test_cli_pull_and_push_through_the_services(reg: RegistryServer, tmp_path: Path) -> None:
    img = im.build_image([im.busybox_layer(), im.Layer([im.dir_("etc"), im.file("etc/hi", "there")], "zstd")])
    await im.push_raw(reg.url, "lib/bb", "v1", img)
    ms = MemStores(str(tmp_path / "s"))
    async with serve(tmp_path, ms) as sock:
        out = io.StringIO()
        ref = await cli.pull(args(sock, "pull", f"{reg.host}/lib/bb:v1", label=["team=a"]), out)
        assert ref == f"{reg.host}/lib/bb:v1"
        rec = ms.images.images[ref]
        assert rec.target.digest == img.digest and rec.labels == {"team": "a"}
        assert sorted(ms.snapshotter.snaps) == sorted(img.chain_ids())
        text = out.getvalue()
        assert f"Pulling from {ref}" in text
        assert f"layer-{img.layers[0].digest[7:19]}: downloading" in text
        assert "extracted" in text and f"Completed pull from {ref}" in text
        # Push it under a new name, and pull that back into another namespace.
        out2 = io.StringIO()
        await cli.push(args(sock, "push", f"{reg.host}/copy/bb:v2", local=ref), out2)
        assert "Completed push" in out2.getvalue()
        await cli.pull(
            args(sock, "pull", f"{reg.host}/copy/bb:v2", namespace="other", quiet=True), io.StringIO()
        )
        assert ms.images.images[f"{reg.host}/copy/bb:v2"].target.digest == img.digest
        # Errors come back as gRPC statuses with the errdefs code.
        with pytest.raises(GRPCError) as ei:
            await cli.pull(args(sock, "pull", f"{reg.host}/lib/bb:nope"), io.StringIO())
        assert (
            errgrpc.from_code(ei.value.status.value, ei.value.message or "").__class__
            is errdefs.NotFoundError
        )
        with pytest.raises(GRPCError) as ei:
            await cli.push(
                args(sock, "push", f"{reg.host}/x/y:1", local="nonexistent.example/none:1"), io.StringIO()
            )
        assert ei.value.status.value == errdefs.NotFoundError.code


async def test_cli_pull_with_credentials_over_the_auth_stream(tmp_path: Path) -> None:
    img = im.build_image([im.busybox_layer()])
    auth = TokenAuth(users={"alice": "pw"}, grants={"alice": ("pull", "push")})
    async with registry(tmp_path, auth=auth) as reg:
        ms = MemStores(str(tmp_path / "s"))
        async with serve(tmp_path, ms) as sock:
            # Seed: push through the daemon with credentials (from an image pulled from elsewhere).
            async with registry(tmp_path / "plain") as plain:
                await im.push_raw(plain.url, "lib/bb", "v1", img)
                await cli.pull(args(sock, "pull", f"{plain.host}/lib/bb:v1", quiet=True), io.StringIO())
                await cli.push(
                    args(
                        sock,
                        "push",
                        f"{reg.host}/team/bb:v1",
                        local=f"{plain.host}/lib/bb:v1",
                        user="alice:pw",
                    ),
                    io.StringIO(),
                )
            with pytest.raises(GRPCError) as ei:
                await cli.pull(args(sock, "pull", f"{reg.host}/team/bb:v1", namespace="n2"), io.StringIO())
            assert ei.value.status.value == errdefs.UnauthenticatedError.code
            await cli.pull(
                args(sock, "pull", f"{reg.host}/team/bb:v1", namespace="n2", user="alice:pw"), io.StringIO()
            )
            assert f"{reg.host}/team/bb:v1" in ms.images.images


def test_cli_main_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(args(str(tmp_path / "missing.sock"), "pull", "localhost:1/a:b"))
    assert rc == 1
    assert "pull failed" in capsys.readouterr().err
