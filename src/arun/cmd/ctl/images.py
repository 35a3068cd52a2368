"""``arun images pull|push|ls|rm|import|export`` (aliases ``image``, ``i``).

``pull`` goes through ``arun.Client.pull`` (the daemon's transfer service, or a
client-side pull against containerd 1.6); ``push`` is the registry work's
transfer-based push (``arun.cmd.images.push``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from arun import errdefs
from arun.cmd.ctl.common import add_global_flags, client_from, run_command
from arun.cmd.ctl.output import Column, ago, emit, size

if TYPE_CHECKING:
    from arun.client import Client, PullProgress

__all__ = ["ProgressBars", "add_parser", "main"]


@dataclass
class _Item:
    name: str
    status: str = ""
    offset: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)


class ProgressBars:
    """One line per item (layer, config, manifest): redrawn bars on a terminal, state changes otherwise."""

    WIDTH = 30

    def __init__(self, out: IO[str], *, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        self.tty = out.isatty()
        self.items: dict[str, _Item] = {}
        self.drawn = 0
        self.last = 0.0

    def __call__(self, p: PullProgress) -> None:
        if not self.enabled:
            return
        item = self.items.setdefault(p.name, _Item(p.name))
        changed = item.status != p.status
        item.status, item.offset, item.total = p.status, p.offset, p.total or item.total
        if self.tty:
            now = time.monotonic()
            if changed or now - self.last > 0.1:
                self.draw()
                self.last = now
        elif changed:
            self.out.write(f"{self.short(item.name)}: {item.status}\n" if item.name else f"{item.status}\n")
            self.out.flush()

    @staticmethod
    def short(name: str) -> str:
        """``sha256:<hex>`` or the daemon's ``layer-sha256:<hex>`` as a 12-digit id."""
        kind, sep, rest = name.partition("sha256:")
        return f"{kind}{rest[:12]}" if sep else name

    def draw(self) -> None:
        lines = []
        for item in self.items.values():
            frac = (
                item.offset / item.total
                if item.total
                else (1.0 if item.status in ("done", "exists") else 0.0)
            )
            filled = int(min(max(frac, 0.0), 1.0) * self.WIDTH)
            bar = "=" * filled + " " * (self.WIDTH - filled)
            amount = f"{size(item.offset)}/{size(item.total)}"
            lines.append(f"{self.short(item.name):<14} {item.status:<12} [{bar}] {amount}")
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}A\x1b[J")
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("images", aliases=["image", "i"], help="manage images (pull, ls, rm, import, export)")
    add_global_flags(p, top=False)
    isub = p.add_subparsers(dest="images_command", metavar="SUBCOMMAND", required=True)

    pull = isub.add_parser("pull", help="pull an image and unpack it")
    add_global_flags(pull, top=False)
    pull.add_argument("ref", help="image reference (busybox, docker.io/library/busybox:1.36, ...)")
    pull.add_argument(
        "--plain-http", action="store_true", help="use HTTP for registries without configuration"
    )
    pull.add_argument("--platform", default=None, help="platform, e.g. linux/arm64 (default: this machine's)")
    pull.add_argument("--snapshotter", default=None, help="snapshotter to unpack into")
    pull.add_argument("--skip-unpack", action="store_true", help="fetch only")
    pull.add_argument("--hosts-dir", default="", help="a directory of hosts.toml files")
    pull.add_argument(
        "-u", "--user", default=None, help="registry credentials USER[:PASSWORD] (asks when no password)"
    )
    pull.add_argument("-q", "--quiet", action="store_true", help="print only the image name")

    push = isub.add_parser("push", help="push a local image to a registry (through the daemon)")
    add_global_flags(push, top=False)
    push.add_argument("ref", help="where to push: registry/repository:tag")
    push.add_argument("local", nargs="?", default="", help="the local image (default: REF)")
    push.add_argument(
        "--plain-http", action="store_true", help="use HTTP for registries without configuration"
    )
    push.add_argument(
        "-u", "--user", default=None, help="registry credentials USER[:PASSWORD] (asks when no password)"
    )
    push.add_argument(
        "--hosts-dir", default="", help="a directory of hosts.toml files instead of the daemon's"
    )
    push.add_argument(
        "--platform", action="append", default=[], help="platform (repeatable), e.g. linux/arm64"
    )
    push.add_argument("-q", "--quiet", action="store_true", help="print only the reference")

    ls = isub.add_parser("ls", aliases=["list"], help="list images")
    add_global_flags(ls, top=False)
    ls.add_argument("filters", nargs="*", help="containerd filters, e.g. name~=busybox")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only names")

    rm = isub.add_parser("rm", aliases=["remove", "delete"], help="remove images")
    add_global_flags(rm, top=False)
    rm.add_argument("names", nargs="+", help="image names")
    rm.add_argument("--sync", action="store_true", help="wait for garbage collection")

    imp = isub.add_parser("import", help="import an OCI layout or Docker image archive")
    add_global_flags(imp, top=False)
    imp.add_argument("file", help="the archive (tar)")
    imp.add_argument("--base-name", default=None, help="name prefix for entries named only by tag")
    imp.add_argument("--index-name", default=None, help="also create an image for the whole index")
    imp.add_argument("--all-platforms", action="store_true", help="import every platform")
    imp.add_argument("--platform", default=None, help="platform to import (default: this machine's)")
    imp.add_argument("--no-unpack", action="store_true", help="do not unpack")
    imp.add_argument("--snapshotter", default=None)
    imp.add_argument("-q", "--quiet", action="store_true", help="print only the image names")

    exp = isub.add_parser("export", help="export images as an OCI layout archive")
    add_global_flags(exp, top=False)
    exp.add_argument("file", help="output file ('-' for stdout)")
    exp.add_argument("names", nargs="+", help="image names")
    exp.add_argument("--all-platforms", action="store_true")
    exp.add_argument("--platform", default=None)


IMAGE_COLUMNS = [
    Column("REF", "name"),
    Column("TYPE", "media_type", lambda v: str(v).rsplit(".", 2)[-2] if v else "-"),
    Column("DIGEST", "digest"),
    Column("SIZE", "size", size, right=True),
    Column("CREATED", "created_at", ago),
]


async def _image_records(c: Client, filters: list[str]) -> list[dict[str, Any]]:
    out = []
    for img in await c.images.list(*filters):
        try:
            total: int | None = await c.images.size(img.name)
        except errdefs.ArunError:
            total = None
        out.append(
            {
                "name": img.name,
                "digest": img.target.digest,
                "media_type": img.target.media_type,
                "size": total,
                "labels": dict(img.labels),
                "created_at": img.created_at,
                "updated_at": img.updated_at,
            }
        )
    return out


def main(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    stdout = out or sys.stdout
    cmd = args.images_command

    async def go() -> int:
        async with client_from(args) as c:
            if cmd == "pull":
                bars = ProgressBars(sys.stderr, enabled=not args.quiet and args.output == "table")
                from arun.cmd.images import _user

                img = await c.pull(
                    args.ref,
                    progress=bars,
                    unpack=not args.skip_unpack,
                    snapshotter=args.snapshotter,
                    platform=args.platform,
                    plain_http=args.plain_http,
                    hosts_dir=args.hosts_dir,
                    credentials=_user(args.user),
                )
                rec = {"name": img.name, "digest": img.target.digest, "media_type": img.target.media_type}
                # The table form is the pulled name alone (as docker pull's last line), for scripts.
                emit(
                    stdout,
                    args.output,
                    rec,
                    IMAGE_COLUMNS[:3],
                    quiet_key="name",
                    quiet=args.output == "table",
                )
            elif cmd == "push":
                from arun.client.pull import has_transfer
                from arun.client.transport import parse_endpoint
                from arun.cmd.images import push

                if not await has_transfer(c):
                    raise errdefs.UnimplementedError(
                        "push needs a daemon with a transfer service (arun, containerd >= 1.7)"
                    )

                endpoint = parse_endpoint(args.address)
                if endpoint.path is None:
                    raise errdefs.InvalidArgumentError("push needs the daemon's unix socket")
                quiet = args.quiet or args.output != "table"  # progress only for people
                pushed = await push(
                    argparse.Namespace(**{**vars(args), "address": endpoint.path, "quiet": quiet}), sys.stderr
                )
                emit(
                    stdout,
                    args.output,
                    {"name": pushed},
                    [Column("REF", "name")],
                    quiet_key="name",
                    quiet=args.quiet,
                )
            elif cmd in ("ls", "list"):
                recs = await _image_records(c, args.filters)
                emit(stdout, args.output, recs, IMAGE_COLUMNS, quiet_key="name", quiet=args.quiet)
            elif cmd in ("rm", "remove", "delete"):
                missing = []
                removed = []
                for name in args.names:
                    try:
                        await c.images.delete(name, sync=args.sync)
                        removed.append(name)
                    except errdefs.NotFoundError:
                        missing.append(name)
                if args.output == "table":
                    for name in removed:
                        stdout.write(name + "\n")
                else:
                    emit(stdout, args.output, {"removed": removed, "not_found": missing})
                if missing:
                    raise errdefs.NotFoundError(
                        f"image {missing[0]!r} not found"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    )
            elif cmd == "import":
                bars = ProgressBars(sys.stderr, enabled=not args.quiet and args.output == "table")
                made = await c.import_archive(
                    args.file,
                    base_name=args.base_name,
                    index_name=args.index_name,
                    platform=args.platform,
                    all_platforms=args.all_platforms,
                    unpack=not args.no_unpack,
                    snapshotter=args.snapshotter,
                    progress=bars if stdout.isatty() else None,
                )
                recs = [
                    {"name": i.name, "digest": i.target.digest, "media_type": i.target.media_type}
                    for i in made
                ]
                emit(stdout, args.output, recs, IMAGE_COLUMNS[:3], quiet_key="name", quiet=args.quiet)
            elif cmd == "export":
                if args.file == "-":
                    n = await c.export_archive(
                        sys.stdout.buffer,
                        args.names,
                        platform=args.platform,
                        all_platforms=args.all_platforms,
                    )
                else:
                    n = await c.export_archive(
                        args.file, args.names, platform=args.platform, all_platforms=args.all_platforms
                    )
                    if args.output != "table":
                        emit(stdout, args.output, {"file": args.file, "bytes": n, "images": args.names})
            return 0

    return run_command(go)
