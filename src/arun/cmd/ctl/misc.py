"""``arun events``, ``arun version``, ``arun namespaces``."""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

from arun import errdefs
from arun.cmd.ctl.common import add_global_flags, client_from, record, run_command
from arun.cmd.ctl.output import Column, emit, to_yaml

__all__ = ["add_parsers", "main"]


def add_parsers(sub: Any) -> None:
    ev = sub.add_parser("events", help="print events as they happen (until Ctrl-C, or --count)")
    add_global_flags(ev, top=False)
    ev.add_argument("-f", "--follow", action="store_true", help="keep printing (the default; for ctr habits)")
    ev.add_argument("--count", type=int, default=0, help="stop after this many events")
    ev.add_argument(
        "filters",
        nargs="*",
        help="containerd filters; any may match, commas join conditions: 'namespace==x,topic~=\"/tasks/\"'",
    )

    v = sub.add_parser("version", help="the daemon's version")
    add_global_flags(v, top=False)

    ns = sub.add_parser("namespaces", aliases=["ns"], help="list namespaces")
    add_global_flags(ns, top=False)
    nsub = ns.add_subparsers(dest="ns_command", metavar="SUBCOMMAND")
    nls = nsub.add_parser("ls", help="list namespaces")
    add_global_flags(nls, top=False)
    nls.add_argument("-q", "--quiet", action="store_true")


async def _events(args: argparse.Namespace, out: IO[str]) -> int:
    if args.count < 0:
        raise errdefs.InvalidArgumentError("--count must not be negative")
    n = 0
    async with client_from(args) as c:
        async for ev in c.events(*args.filters):
            if args.output == "table":
                when = ev.timestamp.isoformat() if ev.timestamp else "-"
                fields = " ".join(f"{k}={v}" for k, v in ev.data.items() if not isinstance(v, dict | list))
                out.write(f"{when} {ev.namespace} {ev.topic} {fields}\n")
            elif args.output == "json":
                import json

                rec = record(ev)
                rec["timestamp"] = ev.timestamp.isoformat() if ev.timestamp else None
                out.write(json.dumps(rec) + "\n")
            else:
                rec = record(ev)
                rec["timestamp"] = ev.timestamp.isoformat() if ev.timestamp else None
                out.write("---\n" + to_yaml(rec))
            out.flush()
            n += 1
            if args.count and n >= args.count:
                break
    return 0


async def _version(args: argparse.Namespace, out: IO[str]) -> int:
    from arun.version import VERSION

    async with client_from(args) as c:
        v = await c.version()
    rec = {"client": VERSION, "server_version": v.version, "server_revision": v.revision}
    if args.output == "table":
        out.write(
            f"Client:\n  Version:  {VERSION}\n\nServer:\n  Version:  {v.version}\n  Revision: {v.revision}\n"
        )
    else:
        emit(out, args.output, rec)
    return 0


async def _namespaces(args: argparse.Namespace, out: IO[str]) -> int:
    async with client_from(args) as c:
        recs = [{"name": n.name, "labels": dict(n.labels)} for n in await c.namespaces()]
    emit(
        out,
        args.output,
        recs,
        [Column("NAME", "name"), Column("LABELS", "labels")],
        quiet_key="name",
        quiet=getattr(args, "quiet", False),
    )
    return 0


def main(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    stdout = out or sys.stdout
    fn = {"events": _events, "version": _version, "namespaces": _namespaces, "ns": _namespaces}[args.command]
    return run_command(lambda: fn(args, stdout))
