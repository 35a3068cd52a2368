"""Interleaved A/B/C of ``ctr run -d``, split into its RPCs as ctr sees them.

Tree A and tree B each run a private arun daemon (arun's shim), C is a private containerd 1.6
(Go shim); every round runs one ``ctr run -d`` on each, under ``strace`` (only ctr is traced:
its reads and writes on the daemon socket), and the HTTP/2 frames are decoded to time every
gRPC call from request to end of stream. Prints the medians, in ms, of:

* ``total``: ctr's life (execve to exit_group; strace slows ctr itself a little);
* ``container``: the container part (first RPC to the end of Leases.Delete);
* ``pre``: Containers.Get, Snapshots.Mounts, Containers.Get (start of the first to the start of
  Tasks.Create);
* ``create`` / ``start``: Tasks.Create and Tasks.Start, request to reply;
* ``task``: end of Leases.Delete to ctr's exit.

    git archive <base-commit> src | tar -x -C /tmp/base
    PYTHONPATH=src python tools/taskpath/ab_rpcs.py /tmp/base/src src 20

Needs root, runc, containerd, ctr and strace. Not a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from hpack import Decoder

from arun.benchmarks import shim_bench as sb
from arun.testing.ociarchive import Entry, build_archive
from arun.testing.ociarchive import busybox_rootfs as layer

_IO = re.compile(r'(\d+)\s+([\d.]+) (write|read)\((\d+), "((?:\\x[0-9a-f]{2})*)"')
_RESUMED = re.compile(r'(\d+)\s+([\d.]+) <\.\.\. read resumed>"((?:\\x[0-9a-f]{2})*)"')
_UNFINISHED = re.compile(r"(\d+)\s+([\d.]+) read\((\d+), +<unfinished")
_CONNECT = re.compile(r"(\d+)\s+([\d.]+) connect\((\d+), \{sa_family=AF_UNIX")
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frames(buf: bytes) -> tuple[list[tuple[int, int, int, bytes]], bytes]:
    out = []
    while len(buf) >= 9:
        size = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + size:
            break
        sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        out.append((buf[3], buf[4], sid, buf[9 : 9 + size]))
        buf = buf[9 + size :]
    return out, buf


def _header_block(flags: int, payload: bytes) -> bytes:
    if flags & 0x8:  # PADDED
        payload = payload[1 : len(payload) - payload[0]]
    if flags & 0x20:  # PRIORITY
        payload = payload[5:]
    return payload


def parse_trace(path: Path) -> dict[str, Any]:
    """{"exec": t, "exit": t, "rpcs": [[path, start, end], ...]} from a ctr strace."""
    fd: str | None = None
    unfinished: dict[str, str] = {}
    out_buf = in_buf = b""
    decoder = Decoder()
    rpcs: dict[int, list[Any]] = {}
    order: list[int] = []
    t_exec = t_exit = 0.0
    for line in path.read_text().splitlines():
        if " execve(" in line and not t_exec:
            t_exec = float(line.split()[1])
        if "exit_group(" in line:
            t_exit = float(line.split()[1])
        m = _CONNECT.match(line)
        if m and fd is None:
            fd = m.group(3)
            continue
        u = _UNFINISHED.match(line)
        if u:
            unfinished[u.group(1)] = u.group(3)
            continue
        io = _IO.match(line)
        if io is not None:
            _pid, t, op, fdn, hexdata = io.groups()
        else:
            r = _RESUMED.match(line)
            if r is None or unfinished.get(r.group(1)) != fd:
                continue
            t, op, fdn, hexdata = r.group(2), "read", fd, r.group(3)
        if fdn != fd:
            continue
        data = bytes.fromhex(hexdata.replace("\\x", ""))
        if op == "write":
            out_buf += data.removeprefix(_PREFACE)
            frames, out_buf = _frames(out_buf)
            for typ, flags, sid, payload in frames:
                if typ == 1:  # HEADERS of a new request
                    headers: dict[Any, Any] = dict(decoder.decode(_header_block(flags, payload)))
                    rpcs[sid] = [headers.get(":path", "?"), float(t), None]
                    order.append(sid)
        else:
            in_buf += data
            frames, in_buf = _frames(in_buf)
            for typ, flags, sid, _payload in frames:
                if typ in (0, 1) and flags & 0x1 and sid in rpcs:  # END_STREAM
                    rpcs[sid][2] = float(t)
    return {"exec": t_exec, "exit": t_exit, "rpcs": [rpcs[s] for s in order]}


def segments(d: dict[str, Any]) -> dict[str, float]:
    rpcs = d["rpcs"]

    def last(name: str) -> list[Any]:
        found: list[Any] = [r for r in rpcs if r[0].endswith(name)][-1]
        return found

    lease_delete = last("Leases/Delete")
    first_get = next(r for r in rpcs if r[0].endswith("Containers/Get"))
    create, start = last("Tasks/Create"), last("Tasks/Start")
    ms = 1000.0
    return {
        "total": (d["exit"] - d["exec"]) * ms,
        "container": (lease_delete[2] - rpcs[0][1]) * ms,
        "pre": (create[1] - first_get[1]) * ms,
        "create": (create[2] - create[1]) * ms,
        "start": (start[2] - start[1]) * ms,
        "task": (d["exit"] - lease_delete[2]) * ms,
    }


def traced_run(sock: Path, ns: str, runtime: str, id: str, trace: Path) -> dict[str, float]:
    subprocess.run(
        ["strace", "-f", "-ttt", "-qq", "-xx", "-s", "100000",
         "-e", "trace=connect,write,read,execve,exit_group", "-o", str(trace),
         "ctr", "--address", str(sock), "--namespace", ns, "run", "-d", "--runtime", runtime,
         sb.IMAGE, id, "sleep", "1000"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return segments(parse_trace(trace))


def main() -> None:
    src_a, src_b, runs = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), int(sys.argv[3])
    with sb.workdir() as base, contextlib.ExitStack() as stack:
        archive = base / "image.tar"
        build_archive(archive, sb.IMAGE, [[*layer(), Entry("bin/sleep", "symlink", b"busybox")]])
        series = sb.series_of_trees(base, stack, archive, {"A": src_a, "B": src_b}, containerd=True)
        results: dict[str, list[dict[str, float]]] = {k: [] for k in series}
        for i in range(runs + 1):  # round 0 warms up
            for name, s in series.items():
                id = f"t{i:02d}"
                s.ids.append(id)
                seg = traced_run(s.sock, s.ns, s.runtime, id, base / f"{name}-{id}.trace")
                if i:
                    results[name].append(seg)
        print(
            json.dumps(
                {
                    name: {k: round(statistics.median(x[k] for x in rows), 1) for k in rows[0]}
                    for name, rows in results.items()
                }
            )
        )


if __name__ == "__main__":
    main()
