"""The zygote's rehearsal (``arun.shim.server.rehearse``): a shim session with containers run
through their whole lifecycle by a stand-in runtime, that leaves the process as it found it.

Each case runs in a fresh interpreter (the rehearsal changes the process: subreaper, signal
handlers while it runs, children), which reports what it saw as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]

# What the process looks like: fds, children, threads, signal dispositions, subreaper.
PROBE = r"""
import json, os, signal, sys, threading
from arun.shim import reaper, server

def children():
    out = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as fh:
            out += fh.read().split()
    return sorted(out)

def snapshot():
    return {
        "fds": sorted(os.listdir("/proc/self/fd")),
        "children": children(),
        "threads": threading.active_count(),
        "signals": {s.name: str(signal.getsignal(s)) for s in signal.Signals
                    if s not in (signal.SIGKILL, signal.SIGSTOP)},
        "wakeup_fd": signal.set_wakeup_fd(-1),
        "subreaper": reaper.is_child_subreaper(),
        "cwd": os.getcwd(),
    }

server.preload()
if sys.argv[1] == "subreaper":
    reaper.set_child_subreaper(True)
if sys.argv[2] != "-":
    server._STAND_IN_RUNTIME = server._STAND_IN_RUNTIME.replace(*json.loads(sys.argv[2]))
before = snapshot()
failure = server.rehearse()
after = snapshot()
print(json.dumps({"before": before, "after": after, "failure": failure}))
"""


def rehearse(tmp: str, subreaper: bool = False, patch: tuple[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TMPDIR=tmp)
    args = ["subreaper" if subreaper else "-", json.dumps(patch) if patch else "-"]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def tmp() -> Any:
    d = tempfile.mkdtemp(prefix="arun-test-rehearse-")
    yield d
    os.rmdir(d)  # fails the test if the rehearsal left anything in its TMPDIR


@pytest.mark.parametrize("subreaper", [False, True])
def test_the_lifecycle_runs_and_leaves_nothing_behind(tmp: str, subreaper: bool) -> None:
    r = rehearse(tmp, subreaper)
    assert r["failure"] == ""  # every container created, started, exited and deleted, events out
    assert r["after"] == r["before"]
    assert r["after"]["subreaper"] is subreaper
    assert r["after"]["children"] == []
    assert os.listdir(tmp) == []


def test_a_failing_rehearsal_ends_its_containers(tmp: str) -> None:
    # The runtime's kill fails: the containers keep running until the rehearsal kills and
    # reaps them itself.
    r = rehearse(tmp, patch=('kill) kill -"$2" "$pid";;', "kill) exit 1;;"))
    assert "kill failed" in r["failure"]
    assert r["after"] == r["before"]
    assert r["after"]["children"] == []
    assert os.listdir(tmp) == []


def test_a_runtime_that_does_not_start_fails_quietly(tmp: str) -> None:
    r = rehearse(tmp, patch=("start) ", "start) exit 3; "))
    assert "start failed" in r["failure"]
    assert r["after"] == r["before"]
    assert os.listdir(tmp) == []
