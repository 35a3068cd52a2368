"""Same-process A/B against daemons that load ``tools/rpcfloor/sitecustomize.py``: per round and
daemon, variant a then b (order alternating), each measured by N unary calls of the Go client
(``unary``) or N ``ctr containers create`` + ``rm`` (``create``); prints medians as JSON.

    python tools/rpcfloor/toggle_ab.py unary GRPCBENCH ROUNDS N METHOD NAME=SOCK:PID ...
    python tools/rpcfloor/toggle_ab.py create NAMESPACE ROUNDS N IMAGE NAME=SOCK:PID ...
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "grpcfast"))

from ab_unary import cpu_ns


def main() -> None:
    mode, arg, rounds, n, what = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    targets = []
    for spec in sys.argv[6:]:
        name, rest = spec.split("=", 1)
        sock, pid = rest.rsplit(":", 1)
        targets.append((name, sock, int(pid)))
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    counter = 0
    for r in range(rounds + 1):  # round 0 warms up
        for name, sock, pid in targets:
            for variant in "ab" if r % 2 else "ba":
                os.kill(pid, signal.SIGUSR1 if variant == "a" else signal.SIGUSR2)
                time.sleep(0.05)
                key = name + variant
                if mode == "unary":
                    c0 = cpu_ns(pid)
                    argv = [arg, "-a", sock, "-n", str(n), "-m", what, "-ns", "default"]
                    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
                    if r:
                        wall.setdefault(key, []).append(float(out[0]))
                        cpu.setdefault(key, []).append((cpu_ns(pid) - c0) / 1000 / (n + 50))
                    continue
                for _ in range(n):
                    counter += 1
                    cid = f"tab{counter}"
                    c0, t0 = cpu_ns(pid), time.perf_counter()
                    ctr = ["ctr", "-a", sock, "-n", arg, "containers"]
                    subprocess.run([*ctr, "create", what, cid, "sleep", "1"], capture_output=True, check=True)
                    if r:
                        wall.setdefault(key, []).append((time.perf_counter() - t0) * 1000)
                        cpu.setdefault(key, []).append((cpu_ns(pid) - c0) / 1e6)
                    subprocess.run([*ctr, "rm", cid], capture_output=True, check=True)
    unit = "us" if mode == "unary" else "ms"
    print(
        json.dumps(
            {
                k: {
                    f"p50_{unit}": round(statistics.median(wall[k]), 1),
                    f"cpu_{unit}": round(statistics.median(cpu[k]), 2),
                }
                for k in sorted(wall)
            }
        )
    )


if __name__ == "__main__":
    main()
