"""issue 6's benchmark harness (``python -m arun.benchmarks.shim_bench``), run small: every part
reports its numbers for arun and the containerd 1.6 reference, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.runc, pytest.mark.containerd, pytest.mark.integration]

SRC = Path(__file__).resolve().parents[3] / "src"


def _bench_leftovers() -> set[str]:
    """Mounts and processes under one of the harness's work directories (/tmp/arun-bench-*)."""
    found = set()
    with open("/proc/self/mountinfo") as fh:
        found |= {line.split()[4] for line in fh if "/tmp/arun-bench-" in line.split()[4]}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if b"/tmp/arun-bench-" in cmdline:
                found.add(f"pid {entry.name}: " + cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_every_part_reports_arun_beside_containerd() -> None:
    before = _bench_leftovers()
    argv = [
        sys.executable,
        "-m",
        "arun.benchmarks.shim_bench",
        "--runs",
        "2",
        "--pods",
        "2",
        "--settle",
        "12",
    ]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-4000:]
    # The shims' events reach the harness's sink: neither shim retries (and logs) one.
    for noise in ("publish /tasks/", "dropping event", "retry count"):
        assert noise not in r.stdout + r.stderr, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])

    start = out["start"]
    assert set(start) == {"arun zygote", "arun start binary", "containerd-shim-runc-v2"}
    assert all(row["start_p50_ms"] > 0 and row["ready_p50_ms"] > 0 for row in start.values()), start
    assert "note" not in start["arun zygote"], start  # every shim came from the zygote

    pss = out["pss"]
    for name in ("arun (zygote)", "containerd-shim-runc-v2"):
        assert pss[name]["shims"] == 2 and pss[name]["pss_per_pod_kib"] > 0, pss
    assert pss["ratio_per_pod"] > 0

    run = out["run"]
    assert set(run) == {"arun, arun shim", "arun, Go shim", "containerd 1.6, Go shim"}
    for name in ("arun, arun shim", "arun, Go shim"):
        assert run[name]["p50_ms"] > 0 and run[name]["vs_containerd"] > 0, run

    assert _bench_leftovers() <= before
