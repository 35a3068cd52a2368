"""The benchmark harness against real CRI endpoints: results, JSON fields, chart, errors, cleanup.

Runs ``python -m arun.bench`` as users do and checks its output, exit status,
and that the runtime is left as it was found (no pods, containers, images,
CNI attachments or network namespaces of the run).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from arun.bench.cri import CRI
from arun.bench.daemons import PrivateArun, PrivateContainerd
from arun.bench.scenarios import LIFECYCLE_STEPS

pytestmark = [
    pytest.mark.root,
    pytest.mark.runc,
    pytest.mark.containerd,
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
]

SRC = Path(__file__).resolve().parents[3] / "src"
STEP_FIELDS = {"n", "errors", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "throughput_per_s"}


# CRI endpoints the harness tests run against.
ENDPOINTS = ["containerd", "arun"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def private_containerd() -> AsyncIterator[PrivateContainerd]:
    d = await PrivateContainerd.start()
    try:
        yield d
    finally:
        await d.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def private_arun() -> AsyncIterator[PrivateArun]:
    d = await PrivateArun.start()
    try:
        yield d
    finally:
        assert await d.stop() == 0, d.logs()


@pytest.fixture(params=ENDPOINTS)
def containerd(request: pytest.FixtureRequest) -> PrivateContainerd | PrivateArun:
    """A CRI endpoint under test (named for the first one; the tests treat them alike)."""
    d: PrivateContainerd | PrivateArun = request.getfixturevalue(f"private_{request.param}")
    return d


def _bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run(
        [sys.executable, "-m", "arun.bench", "-q", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


async def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_bench, *args)


async def _state(d: PrivateContainerd | PrivateArun) -> dict[str, object]:
    async with CRI(d.endpoint) as cri:
        pods = await cri.pods()
        ctrs = await cri.containers()
        images = sorted(
            t for i in (await cri.call("ListImages", cri.pb.ListImagesRequest())).images for t in i.repo_tags
        )
    netns_dir = d.base / "state" / "io.containerd.grpc.v1.cri" / "netns"
    netns = sorted(os.listdir(netns_dir)) if netns_dir.exists() else []
    assert d.network is not None
    cni = (
        sorted(f for f in os.listdir("/var/lib/cni/results") if f.startswith(d.network.name))
        if os.path.isdir("/var/lib/cni/results")
        else []
    )
    return {
        "pods": [p.id for p in pods],
        "containers": [c.id for c in ctrs],
        "images": images,
        "netns": netns,
        "cni": cni,
    }


async def test_side_by_side_json_and_chart(
    containerd: PrivateContainerd | PrivateArun, tmp_path: Path
) -> None:
    before = await _state(containerd)
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    # The same daemon twice under two names: a side-by-side run with a ratio column.
    r = await bench(
        "--endpoint", f"one={containerd.endpoint}",
        "--endpoint", f"two={containerd.endpoint}",
        "--scenario", "lifecycle,exec,list",
        "--pods", "2", "--concurrency", "2", "--repeat", "3", "--containers", "12", "--list-pods", "2",
        "--warmup", "0", "--json", str(out_json), "--chart", str(out_png),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "== lifecycle" in r.stdout and "two/one" not in r.stdout and "one/two p50" in r.stdout
    doc = json.loads(out_json.read_text())
    assert doc["schema"] == "arun.bench/v1"
    assert [e["name"] for e in doc["endpoints"]] == ["one", "two"]
    assert doc["baseline"] == "two"
    assert doc["endpoints"][0]["runtime_name"] in ("containerd", "arun")
    life = doc["scenarios"]["lifecycle"]
    for ep in ("one", "two"):
        res = life["results"][ep]
        assert list(res["steps"]) == list(LIFECYCLE_STEPS)
        for st in res["steps"].values():
            assert STEP_FIELDS <= set(st)
            assert st["n"] == 2 and st["errors"] == 0
            assert 0 < st["p50_ms"] <= st["p95_ms"] <= st["p99_ms"] <= st["max_ms"]
        assert res["pods_completed"] == 2 and res["pods_per_s"] > 0
        assert [e["step"] for e in res["timeline"]] == list(LIFECYCLE_STEPS)
        starts = [e["start_ms"] for e in res["timeline"]]
        assert starts == sorted(starts)
    assert set(life["ratios"]) == {"one", "two"}
    assert life["ratios"]["two"]["RunPodSandbox"]["p50"] == 1.0
    assert set(life["ratios"]["one"]["StartContainer"]) == {"p50", "p95", "p99", "throughput"}
    ex = doc["scenarios"]["exec"]["results"]["one"]
    assert ex["steps"]["ExecSync"]["n"] == 3 and ex["wrong_output"] == []
    ls = doc["scenarios"]["list"]["results"]["one"]
    assert ls["containers"] == 12 and ls["listed"] >= 12
    assert set(ls["steps"]) == {"ListContainers", "ListPodSandbox"}
    png = out_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 500 and height > 200
    assert await _state(containerd) == before


@pytest.mark.registry
async def test_pull_from_a_local_registry(
    containerd: PrivateContainerd | PrivateArun, tmp_path: Path
) -> None:
    before = await _state(containerd)
    out = tmp_path / "pull.json"
    r = await bench(
        "--endpoint",
        f"c={containerd.endpoint}",
        "--scenario",
        "pull",
        "--local-registry",
        "--repeat",
        "2",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())["scenarios"]["pull"]["results"]["c"]
    assert res["steps"]["PullImage"]["n"] == 2 and res["image"].startswith("127.0.0.1:")
    assert await _state(containerd) == before


async def test_unknown_endpoint_is_one_line(tmp_path: Path) -> None:
    r = await bench("--endpoint", f"unix://{tmp_path}/nothing.sock", "--scenario", "lifecycle")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arun bench: ") and "nothing.sock" in lines[0], r.stderr
    r = await bench("--endpoint", "ftp://x", "--scenario", "lifecycle")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unsupported scheme" in r.stderr


async def test_unknown_scenario_is_one_line(tmp_path: Path) -> None:
    r = await bench("--endpoint", f"unix://{tmp_path}/x.sock", "--scenario", "nope")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown scenario 'nope'" in r.stderr


async def test_missing_image_is_one_line(containerd: PrivateContainerd | PrivateArun) -> None:
    before = await _state(containerd)
    r = await bench(
        "--endpoint", containerd.endpoint, "--image", "docker.io/library/nope:missing", "--pods", "1"
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope:missing" in lines[0] and "not present" in lines[0], r.stderr
    assert await _state(containerd) == before


async def test_container_that_fails_to_start(containerd: PrivateContainerd | PrivateArun) -> None:
    before = await _state(containerd)
    r = await bench(
        "--endpoint",
        f"c={containerd.endpoint}",
        "--pods",
        "2",
        "--warmup",
        "0",
        "--command",
        "/no/such/binary",
    )
    assert r.returncode == 1
    errs = [line for line in r.stderr.splitlines() if line]
    # One line: the failed step, how many calls failed, and why (the later steps of those
    # pods are skipped, not counted as more failures).
    assert len(errs) == 1 and errs[0].startswith("arun bench: "), r.stderr
    assert "StartContainer: 2 of 2 calls failed" in errs[0] and "no/such/binary" in errs[0], r.stderr
    assert "StartContainer error:" in r.stdout and "no/such/binary" in r.stdout
    assert await _state(containerd) == before


async def test_interrupted_run_cleans_up(containerd: PrivateContainerd | PrivateArun) -> None:
    before = await _state(containerd)
    env = dict(os.environ, PYTHONPATH=str(SRC))
    argv = ["-m", "arun.bench", "--endpoint", containerd.endpoint, "--pods", "40", "--warmup", "0"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        # Wait until pods exist, then interrupt mid-run.
        async with CRI(containerd.endpoint) as cri, asyncio.timeout(60):
            while len(await cri.pods()) < 3:
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(120):
            _, err_b = await proc.communicate()
        err = err_b.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted, cleaning up" in err
    assert await _state(containerd) == before
