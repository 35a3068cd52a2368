"""Interleaved unary-call rounds against several already running gRPC servers: per round and server,
the Go client's p50 latency and the server process's CPU per call (all threads, schedstat).

    python tools/grpcfast/ab_unary.py GRPCBENCH ROUNDS CALLS METHOD NAME=SOCK:PID ...
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path


def cpu_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except OSError:
            pass
    return total


def main() -> None:
    bench, rounds, calls, method = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    targets: dict[str, tuple[str, int]] = {}
    for spec in sys.argv[5:]:
        name, rest = spec.split("=", 1)
        sock, pid_text = rest.rsplit(":", 1)
        targets[name] = (sock, int(pid_text))
    lat: dict[str, list[float]] = {n: [] for n in targets}
    cpu: dict[str, list[float]] = {n: [] for n in targets}
    for r in range(rounds + 1):
        for name, (sock, pid) in targets.items():
            c0 = cpu_ns(pid)
            argv = [bench, "-a", sock, "-n", str(calls), "-m", method, "-ns", "default"]
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
            if r:  # round 0 warms up
                lat[name].append(float(out[0]))
                cpu[name].append((cpu_ns(pid) - c0) / 1000 / (calls + 50))
    print(
        json.dumps(
            {
                n: {
                    "p50_us": statistics.median(lat[n]),
                    "server_cpu_us_per_call": round(statistics.median(cpu[n]), 1),
                }
                for n in targets
            }
        )
    )


if __name__ == "__main__":
    main()
