"""``arun images pull|push``: ask the daemon to move an image, as ``ctr`` 2.x does.

The command opens two streams on the daemon's Streaming service — one the daemon sends
``Progress`` on, one it asks for registry credentials on (``--user``) — then calls
``Transfer`` with an ``OCIRegistry`` and an ``ImageStore``. So the daemon's own registry
configuration (``config_path``, mirrors) applies, exactly as for CRI pulls.

    arun images pull [--plain-http] [--user USER[:PASSWORD]] [--platform P] REF
    arun images push [--plain-http] [--user USER[:PASSWORD]] REF [LOCAL_NAME]

``REF`` may be short (``busybox``): it is normalised to ``docker.io/library/busybox:latest``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

from arun import anyproto, errdefs, namespaces, platforms, reference
from arun.api.containerd.services.streaming.v1 import streaming_grpc, streaming_pb2
from arun.api.containerd.services.transfer.v1 import transfer_grpc, transfer_pb2
from arun.api.containerd.types import platform_pb2
from arun.api.containerd.types.transfer import imagestore_pb2, progress_pb2, registry_pb2
from arun.errdefs import grpc as errgrpc

__all__ = ["add_parser", "main", "pull", "push"]

DEFAULT_ADDRESS = "/run/arun/arun.sock"


def add_parser(sub: Any) -> None:
    """Add ``images`` (alias ``image``, ``i``) to the ``arun`` sub-command parser."""
    p = sub.add_parser("images", aliases=["image", "i"], help="pull and push images through the daemon")
    p.add_argument(
        "-a", "--address", default=os.environ.get("ARUN_ADDRESS", DEFAULT_ADDRESS), help="daemon socket"
    )
    p.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get(namespaces.ENV, namespaces.DEFAULT),
        help="namespace (default: $CONTAINERD_NAMESPACE or 'default')",
    )
    isub = p.add_subparsers(dest="images_command", metavar="SUBCOMMAND", required=True)
    for name in ("pull", "push"):
        c = isub.add_parser(name, help=f"{name} an image")
        c.add_argument(
            "--plain-http", action="store_true", help="use HTTP for registries without configuration"
        )
        c.add_argument("-u", "--user", help="registry credentials USER[:PASSWORD] (asks when no password)")
        c.add_argument(
            "--hosts-dir", default="", help="a directory of hosts.toml files instead of the daemon's"
        )
        c.add_argument(
            "--platform", action="append", default=[], help="platform (repeatable), e.g. linux/arm64"
        )
        c.add_argument("-q", "--quiet", action="store_true", help="print only the result")
        c.add_argument("ref", help="image reference")
        if name == "pull":
            c.add_argument("--snapshotter", default="", help="snapshotter to unpack into (daemon default)")
            c.add_argument("--skip-unpack", action="store_true", help="fetch only, do not unpack")
            c.add_argument("--label", action="append", default=[], help="image label KEY=VALUE")
        else:
            c.add_argument("local", nargs="?", default="", help="local image name (default: REF)")


@dataclass
class _Bar:
    name: str
    event: str = ""
    progress: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)


class ProgressView:
    """Renders Progress messages: redrawn bars on a terminal, one line per change otherwise."""

    def __init__(self, out: IO[str], *, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self.tty = out.isatty()
        self.bars: dict[str, _Bar] = {}
        self.drawn = 0
        self.last_draw = 0.0

    def handle(self, p: Any) -> None:
        if self.quiet:
            return
        if not p.name:
            self._line(str(p.event))
            return
        bar = self.bars.setdefault(p.name, _Bar(p.name))
        changed = bar.event != p.event
        bar.event, bar.progress, bar.total = p.event, int(p.progress), int(p.total)
        if self.tty:
            now = time.monotonic()
            if changed or now - self.last_draw > 0.1:
                self._draw()
                self.last_draw = now
        elif changed:
            self.out.write(f"{self._short(bar.name)}: {bar.event}\n")
            self.out.flush()

    @staticmethod
    def _short(name: str) -> str:
        kind, _, dg = name.partition("-")
        if dg.startswith("sha256:"):
            return f"{kind}-{dg[7:19]}"
        return name

    @staticmethod
    def _size(n: int) -> str:
        for unit in ("B", "KiB", "MiB", "GiB"):
            if n < 1024 or unit == "GiB":
                return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
            n /= 1024  # type: ignore[assignment]
        return str(n)

    def _line(self, text: str) -> None:
        if self.tty and self.drawn:
            self.out.write(f"\x1b[{self.drawn}A\x1b[J")
            self.drawn = 0
        self.out.write(text + "\n")
        self.out.flush()
        if self.tty:
            self._draw()

    def _draw(self) -> None:
        lines = []
        for bar in self.bars.values():
            width = 30
            frac = (bar.progress / bar.total) if bar.total else (1.0 if bar.event != "waiting" else 0.0)
            frac = min(max(frac, 0.0), 1.0)
            filled = int(frac * width)
            lines.append(
                f"{self._short(bar.name):<28} {bar.event:<15} [{'=' * filled}{' ' * (width - filled)}] "
                f"{self._size(bar.progress)}/{self._size(bar.total)}"
            )
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}A\x1b[J")
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)


def _user(spec: str | None) -> tuple[str, str] | None:
    if not spec:
        return None
    user, sep, password = spec.partition(":")
    if not sep:
        password = getpass.getpass(f"Password for {user}: ")
    return user, password


@contextlib.asynccontextmanager
async def _open_stream(channel: Any, metadata: dict[str, str]) -> AsyncIterator[tuple[str, Any]]:
    """A registered stream on the daemon: (its id, the grpclib stream)."""
    sid = uuid.uuid4().hex
    stub = streaming_grpc.StreamingStub(channel)
    async with stub.Stream.open(metadata=metadata) as s:
        await s.send_message(anyproto.pack(streaming_pb2.StreamInit(id=sid)))
        ack = await s.recv_message()
        if ack is None:
            raise errdefs.UnavailableError("the daemon closed the stream before acknowledging it")
        try:
            yield sid, s
        finally:
            # Done with it: reset the stream (the daemon may still hold it open).
            with contextlib.suppress(Exception):
                await s.cancel()


async def _serve_progress(s: Any, view: ProgressView) -> None:
    while True:
        msg = await s.recv_message()
        if msg is None:
            return
        if anyproto.is_type(msg, progress_pb2.Progress):
            view.handle(anyproto.unpack(msg, progress_pb2.Progress))


async def _serve_auth(s: Any, creds: tuple[str, str]) -> None:
    while True:
        msg = await s.recv_message()
        if msg is None:
            return
        if not anyproto.is_type(msg, registry_pb2.AuthRequest):
            continue
        resp = registry_pb2.AuthResponse(
            authType=registry_pb2.CREDENTIALS, username=creds[0], secret=creds[1]
        )
        await s.send_message(anyproto.pack(resp))


async def _transfer(
    address: str,
    namespace: str,
    source: Any,
    destination: Any,
    view: ProgressView,
    creds: tuple[str, str] | None,
) -> None:
    from grpclib.client import Channel

    md = {namespaces.GRPC_HEADER: namespace}
    channel = Channel(path=address)
    try:
        async with contextlib.AsyncExitStack() as stack:
            pid, ps = await stack.enter_async_context(_open_stream(channel, md))
            tasks = [asyncio.create_task(_serve_progress(ps, view))]
            if creds is not None:
                aid, as_ = await stack.enter_async_context(_open_stream(channel, md))
                reg = anyproto.unpack(
                    source if anyproto.is_type(source, registry_pb2.OCIRegistry) else destination,
                    registry_pb2.OCIRegistry,
                )
                reg.resolver.auth_stream = aid
                packed = anyproto.pack(reg)
                if anyproto.is_type(source, registry_pb2.OCIRegistry):
                    source = packed
                else:
                    destination = packed
                tasks.append(asyncio.create_task(_serve_auth(as_, creds)))
            req = transfer_pb2.TransferRequest(
                source=source,
                destination=destination,
                options=transfer_pb2.TransferOptions(progress_stream=pid),
            )
            try:
                await transfer_grpc.TransferStub(channel).Transfer(req, metadata=md)
                # Let the last progress messages arrive (the daemon closes the stream).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(tasks[0]), 2)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        channel.close()


def _registry(ref: str, args: argparse.Namespace) -> registry_pb2.OCIRegistry:
    resolver = registry_pb2.RegistryResolver(host_dir=args.hosts_dir)
    if args.plain_http:
        resolver.default_scheme = "http"
    return registry_pb2.OCIRegistry(reference=ref, resolver=resolver)


def _platforms(specs: list[str]) -> list[platform_pb2.Platform]:
    out = []
    for s in specs:
        p = platforms.parse(s)
        out.append(platform_pb2.Platform(os=p.os, architecture=p.architecture, variant=p.variant))
    return out


async def pull(args: argparse.Namespace, out: IO[str]) -> str:
    ref = str(reference.parse_docker_ref(args.ref))
    view = ProgressView(out, quiet=args.quiet)
    plats = _platforms(args.platform) or _platforms([platforms.format(platforms.default_spec())])
    store = imagestore_pb2.ImageStore(name=ref)
    for kv in args.label:
        k, _, v = kv.partition("=")
        store.labels[k] = v
    store.platforms.extend(plats)
    if not args.skip_unpack:
        for p in plats:
            store.unpacks.append(imagestore_pb2.UnpackConfiguration(platform=p, snapshotter=args.snapshotter))
    await _transfer(
        args.address,
        args.namespace,
        anyproto.pack(_registry(ref, args)),
        anyproto.pack(store),
        view,
        _user(args.user),
    )
    return ref


async def push(args: argparse.Namespace, out: IO[str]) -> str:
    ref = str(reference.parse_docker_ref(args.ref))
    local = str(reference.parse_docker_ref(args.local)) if args.local else ref
    view = ProgressView(out, quiet=args.quiet)
    store = imagestore_pb2.ImageStore(name=local)
    store.platforms.extend(_platforms(args.platform))
    await _transfer(
        args.address,
        args.namespace,
        anyproto.pack(store),
        anyproto.pack(_registry(ref, args)),
        view,
        _user(args.user),
    )
    return ref


def main(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from grpclib.exceptions import GRPCError, StreamTerminatedError

    stream = out or sys.stderr
    cmd = {"pull": pull, "push": push}[args.images_command]
    try:
        ref = asyncio.run(cmd(args, stream))
    except GRPCError as exc:
        err = errgrpc.from_code(int(exc.status.value), exc.message or "")
        print(f"arun: {args.images_command} failed: {err.message} ({type(err).__name__})", file=sys.stderr)
        return 1
    except (errdefs.ArunError, StreamTerminatedError, ConnectionError, OSError) as exc:
        print(f"arun: {args.images_command} failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(ref)
    return 0
