"""``arun pods`` and ``arun containers``: the CRI's view, for people used to crictl.

They talk ``runtime.v1`` to the same socket (so they show what kubelet sees,
in the ``k8s.io`` namespace), with crictl's columns; ``inspect`` prints the
verbose status.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import IO, Any

from arun.cmd.ctl.common import add_global_flags, run_command
from arun.cmd.ctl.output import Column, ago, emit

__all__ = ["add_parsers", "main"]


def add_parsers(sub: Any) -> None:
    pods = sub.add_parser("pods", help="pod sandboxes through CRI (crictl pods)")
    add_global_flags(pods, top=False)
    psub = pods.add_subparsers(dest="pods_command", metavar="SUBCOMMAND")
    pls = psub.add_parser("ls", help="list pod sandboxes (the default)")
    add_global_flags(pls, top=False)
    for p in (pods, pls):
        p.add_argument("--name", default="", help="only pods whose name contains this")
        p.add_argument("--label", action="append", default=[], help="KEY=VALUE label selector")
        p.add_argument("-q", "--quiet", action="store_true", help="print only ids")
    pin = psub.add_parser("inspect", help="a pod sandbox's status")
    add_global_flags(pin, top=False)
    pin.add_argument("id")

    ctrs = sub.add_parser("containers", help="containers through CRI (crictl ps)")
    add_global_flags(ctrs, top=False, short_address=False)
    csub = ctrs.add_subparsers(dest="containers_command", metavar="SUBCOMMAND")
    cls = csub.add_parser("ls", help="list containers (the default)")
    add_global_flags(cls, top=False, short_address=False)
    for p in (ctrs, cls):
        p.add_argument("-a", "--all", action="store_true", help="also exited and created containers")
        p.add_argument("-p", "--pod", default="", help="only this pod's containers")
        p.add_argument("--label", action="append", default=[], help="KEY=VALUE label selector")
        p.add_argument("-q", "--quiet", action="store_true", help="print only ids")
    cin = csub.add_parser("inspect", help="a container's status")
    add_global_flags(cin, top=False)
    cin.add_argument("id")


def _ts(ns: int) -> str | None:
    if not ns:
        return None
    return datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC).isoformat()


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for kv in items:
        k, _, v = kv.partition("=")
        out[k] = v
    return out


def _short(i: Any) -> str:
    return str(i)[:13] if i else "-"


async def _pods(args: argparse.Namespace, out: IO[str]) -> int:
    from google.protobuf import json_format

    from arun.bench.cri import CRI

    async with CRI(args.address, timeout=args.timeout) as cri:
        if getattr(args, "pods_command", None) == "inspect":
            r = await cri.call(
                "PodSandboxStatus", cri.pb.PodSandboxStatusRequest(pod_sandbox_id=args.id, verbose=True)
            )
            emit(
                out,
                "json" if args.output == "table" else args.output,
                json_format.MessageToDict(r.status, preserving_proto_field_name=True),
            )
            return 0
        pods = await cri.pods(_labels(args.label))
        state = {v: k for k, v in cri.pb.PodSandboxState.items()}
        recs = [
            {
                "id": p.id,
                "name": p.metadata.name,
                "namespace": p.metadata.namespace,
                "uid": p.metadata.uid,
                "attempt": p.metadata.attempt,
                "state": state.get(p.state, str(p.state)).removeprefix("SANDBOX_"),
                "created_at": _ts(p.created_at),
                "runtime_handler": p.runtime_handler,
                "labels": dict(p.labels),
            }
            for p in pods
            if args.name in p.metadata.name
        ]
        recs.sort(key=lambda r: r["created_at"] or "", reverse=True)
        cols = [
            Column("POD ID", "id", _short),
            Column("CREATED", "created_at", ago),
            Column("STATE", "state"),
            Column("NAME", "name"),
            Column("NAMESPACE", "namespace"),
            Column("ATTEMPT", "attempt", right=True),
            Column("RUNTIME", "runtime_handler", lambda v: v or "(default)"),
        ]
        emit(out, args.output, recs, cols, quiet_key="id", quiet=args.quiet)
    return 0


async def _containers(args: argparse.Namespace, out: IO[str]) -> int:
    from google.protobuf import json_format

    from arun.bench.cri import CRI

    async with CRI(args.address, timeout=args.timeout) as cri:
        if getattr(args, "containers_command", None) == "inspect":
            r = await cri.call(
                "ContainerStatus", cri.pb.ContainerStatusRequest(container_id=args.id, verbose=True)
            )
            emit(
                out,
                "json" if args.output == "table" else args.output,
                json_format.MessageToDict(r.status, preserving_proto_field_name=True),
            )
            return 0
        ctrs = await cri.containers(_labels(args.label), pod=args.pod)
        state = {v: k for k, v in cri.pb.ContainerState.items()}
        recs = [
            {
                "id": c.id,
                "pod_id": c.pod_sandbox_id,
                "name": c.metadata.name,
                "attempt": c.metadata.attempt,
                "image": c.image.image,
                "image_ref": c.image_ref,
                "state": state.get(c.state, str(c.state)).removeprefix("CONTAINER_"),
                "created_at": _ts(c.created_at),
                "labels": dict(c.labels),
            }
            for c in ctrs
            if args.all or c.state == cri.pb.CONTAINER_RUNNING
        ]
        recs.sort(key=lambda r: r["created_at"] or "", reverse=True)
        cols = [
            Column("CONTAINER", "id", _short),
            Column("IMAGE", "image"),
            Column("CREATED", "created_at", ago),
            Column("STATE", "state"),
            Column("NAME", "name"),
            Column("ATTEMPT", "attempt", right=True),
            Column("POD ID", "pod_id", _short),
        ]
        emit(out, args.output, recs, cols, quiet_key="id", quiet=args.quiet)
    return 0


def main(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    stdout = out or sys.stdout
    fn = _pods if args.command == "pods" else _containers
    return run_command(lambda: fn(args, stdout))
