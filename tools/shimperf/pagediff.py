"""Where a forked shim's resident pages come from, against the process it was forked from
(the zygote's template): per mapping, KiB still shared (same physical page), copied (the
address was resident in the template, the shim has its own copy: copy-on-write), or new.

    python tools/shimperf/pagediff.py SHIM_PID TEMPLATE_PID      (root: reads pagemap)
"""

from __future__ import annotations

import collections
import os
import struct
import sys
from collections.abc import Iterator


def maps(pid: int) -> list[tuple[int, int, str]]:
    out = []
    with open(f"/proc/{pid}/maps") as fh:
        for line in fh:
            p = line.split()
            a, b = (int(x, 16) for x in p[0].split("-"))
            out.append((a, b, p[5] if len(p) > 5 else "[anon]"))
    return out


def frames(pid: int, a: int, b: int) -> dict[int, int]:
    res = {}
    with open(f"/proc/{pid}/pagemap", "rb") as fh:
        fh.seek(a // 4096 * 8)
        data = fh.read((b - a) // 4096 * 8)
    for i in range(len(data) // 8):
        (v,) = struct.unpack_from("<Q", data, i * 8)
        if v >> 63:  # present
            res[a + i * 4096] = v & ((1 << 55) - 1)
    return res


def classified_pages(shim: int, template: int) -> Iterator[tuple[str, str]]:
    """For each present page of ``shim``: its mapping's name and whether it is the template's
    frame at the same address ("shared"), a copy of a page the template has there ("copied"),
    or one only the shim has ("new")."""
    tmaps = maps(template)
    for a, b, name in maps(shim):
        if name in ("[vvar]", "[vsyscall]"):
            continue
        try:
            mine = frames(shim, a, b)
        except OSError:
            continue
        theirs: dict[int, int] = {}
        for ta, tb, _ in tmaps:
            if ta < b and tb > a:
                try:
                    theirs.update(frames(template, max(a, ta), min(b, tb)))
                except OSError:
                    pass
        for va, pf in mine.items():
            yield name, "new" if va not in theirs else "shared" if theirs[va] == pf else "copied"


def main() -> None:
    shim, template = int(sys.argv[1]), int(sys.argv[2])
    stats: collections.Counter[tuple[str, str]] = collections.Counter()
    for name, kind in classified_pages(shim, template):
        stats[(os.path.basename(name), kind)] += 4
    for (name, kind), kib in stats.most_common(16):
        print(f"{name:45s} {kind:7s} {kib:7d} KiB")


if __name__ == "__main__":
    main()
