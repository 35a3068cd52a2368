"""The words that differ between two live shims' private pages that differ in <= 16 bytes (root; run
while a benchmark or account.py holds pods): PYTHONPATH=src python tools/shimdirty/diffs.py"""

import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import account as A

pids = sorted(
    int(p)
    for p in os.listdir("/proc")
    if p.isdigit() and open(f"/proc/{p}/comm").read().strip() == "arun-shim"
)
print("shims", len(pids))
a, b = pids[2], pids[3]
kp = A.Kpages()
pa, pb = A.pages(a), A.pages(b)


def priv(pm):
    return {
        va: k
        for va, (pfn, k) in pm.items()
        if kp.count(pfn) <= 1 and not kp.flags(pfn) & (A.KPF_KSM | A.KPF_ZERO)
    }


qa, qb = priv(pa), priv(pb)
shown = 0
vals = collections.Counter()
for va in sorted(set(qa) & set(qb)):
    x, y = A.read_mem(a, va, 4096), A.read_mem(b, va, 4096)
    n = sum(1 for i in range(4096) if x[i] != y[i])
    if not 0 < n <= 16:
        continue
    words = [
        (w, x[w : w + 8].hex(), y[w : w + 8].hex()) for w in range(0, 4096, 8) if x[w : w + 8] != y[w : w + 8]
    ]
    pool = A._pool_header(a, va) if qa[va] in ("anon", "[heap]") else None
    for _w, xa, yb in words:
        xv, yv = int.from_bytes(bytes.fromhex(xa), "little"), int.from_bytes(bytes.fromhex(yb), "little")
        kind = (
            "ptr" if xv > 1 << 40 and yv > 1 << 40 else "small" if xv < 1 << 20 and yv < 1 << 20 else "mixed"
        )
        vals[kind] += 1
        if kind == "small":
            vals[f"delta {yv - xv}"] += 1
    if shown < 25:
        shown += 1
        print(hex(va), qa[va], pool, [(w, xa, yb) for w, xa, yb in words][:4])
print(vals.most_common(30))
