"""The harness's pure parts: percentiles, ratios, report text and JSON, the PNG writer, endpoints."""

from __future__ import annotations

import asyncio
import math
import struct
import zlib
from pathlib import Path

import pytest

from arun import errdefs
from arun.bench.chart import FONT, Canvas, render_chart
from arun.bench.report import format_report
from arun.bench.runner import EndpointSpec, Report
from arun.bench.scenarios import ScenarioResult
from arun.bench.stats import Samples, percentile


def test_percentiles_interpolate_like_numpy() -> None:
    v = [1.0, 2.0, 3.0, 4.0]
    assert percentile(v, 50) == 2.5
    assert percentile(v, 0) == 1.0 and percentile(v, 100) == 4.0
    assert math.isclose(percentile(v, 95), 3.85)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_samples_summary() -> None:
    s = Samples()
    for i in range(10):
        s.add(float(i), float(i) + 0.01 * (i + 1))
    s.fail(10.0, 10.5, "boom")
    st = s.summary()
    assert st.n == 10 and st.errors == 1 and st.error_messages == ["boom"]
    assert math.isclose(st.p50_ms, 55.0) and math.isclose(st.max_ms, 100.0)
    assert math.isclose(st.throughput_per_s, 10 / 10.5)  # the window runs to the failed call's end
    j = st.to_json()
    assert set(j) >= {
        "n",
        "errors",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "mean_ms",
        "min_ms",
        "max_ms",
        "throughput_per_s",
    }
    empty = Samples().summary().to_json()
    assert empty["p50_ms"] is None and empty["n"] == 0


def _report() -> Report:
    def res(scale: float) -> ScenarioResult:
        steps = {}
        for name, base in (("RunPodSandbox", 0.1), ("StartContainer", 0.05)):
            s = Samples()
            for i in range(5):
                s.add(i, i + base * scale)
            steps[name] = s.summary()
        timeline = [{"step": "RunPodSandbox", "start_ms": 0.0, "end_ms": 100.0 * scale}]
        return ScenarioResult(steps, 1.0, {"pods": 5, "timeline": timeline})

    r = Report(
        started_at="t",
        options={},
        endpoints=[
            {"name": "arun", "address": "unix:///a", "runtime_name": "arun", "runtime_version": "0.1"},
            {
                "name": "containerd",
                "address": "unix:///c",
                "runtime_name": "containerd",
                "runtime_version": "1.6",
            },
        ],
        baseline="containerd",
    )
    r.scenarios["lifecycle"] = {"arun": res(2.0), "containerd": res(1.0)}
    r.scenarios["exec"] = {"arun": "ExecSync: not implemented", "containerd": res(1.0)}
    return r


def test_ratios_and_json() -> None:
    r = _report()
    ratios = r.ratios("lifecycle")
    assert ratios["arun"]["RunPodSandbox"]["p50"] == 2.0
    assert ratios["arun"]["RunPodSandbox"]["throughput"] is not None
    assert ratios["containerd"]["StartContainer"]["p99"] == 1.0
    doc = r.to_json()
    assert doc["schema"] == "arun.bench/v1" and doc["baseline"] == "containerd"
    assert doc["scenarios"]["exec"]["results"]["arun"] == {"error": "ExecSync: not implemented"}
    assert doc["scenarios"]["lifecycle"]["results"]["arun"]["steps"]["RunPodSandbox"]["p50_ms"] == 200.0


def test_report_text() -> None:
    text = format_report(_report())
    assert "== lifecycle" in text and "arun/containerd p50" in text
    line = next(x for x in text.splitlines() if x.startswith("RunPodSandbox"))
    assert "200.0" in line and "100.0" in line and "2.00x" in line
    assert "arun: failed: ExecSync: not implemented" in text
    assert "timeline of one pod" in text and "0.0..200.0" in text


def test_png_is_valid(tmp_path: Path) -> None:
    c = render_chart(_report())
    data = c.png()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        chunks.append((kind, body))
        pos += 12 + length
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    w, h = struct.unpack(">II", chunks[0][1][:8])
    raw = zlib.decompress(chunks[1][1])
    assert len(raw) == h * (1 + 3 * w)
    assert any(b != 255 for b in raw[1 : 1 + 3 * w * 40])  # something was drawn near the top


def test_font_and_canvas() -> None:
    assert all(len(rows) == 7 and all(r < 32 for r in rows) for rows in FONT.values())
    c = Canvas(20, 10)
    end = c.text(0, 0, "A1", scale=1)
    assert end == 12
    assert c.pixels[0:3] == bytes((255, 255, 255)) and c.pixels[3:6] != bytes((255, 255, 255))


def test_endpoint_specs() -> None:
    assert EndpointSpec.parse("unix:///run/arun/arun.sock") == EndpointSpec(
        "arun", "unix:///run/arun/arun.sock"
    )
    assert EndpointSpec.parse("ctd=/run/c.sock") == EndpointSpec("ctd", "/run/c.sock")
    assert EndpointSpec.parse("tcp://127.0.0.1:1234").address == "tcp://127.0.0.1:1234"
    with pytest.raises(errdefs.InvalidArgumentError):
        EndpointSpec.parse("name=ftp://x")


def test_cli_constants_match_the_harness() -> None:
    from arun.bench import daemons, scenarios
    from arun.bench.cli import BUSYBOX_IMAGE, SANDBOX_IMAGE, SCENARIO_NAMES

    assert tuple(scenarios.SCENARIOS) == SCENARIO_NAMES
    assert (daemons.BUSYBOX_IMAGE, daemons.SANDBOX_IMAGE) == (BUSYBOX_IMAGE, SANDBOX_IMAGE)


def test_samples_of_rounds_merge() -> None:
    a, b = Samples(), Samples()
    a.add(0.0, 0.1)
    a.add(0.1, 0.3)  # window 0.3 s
    b.add(100.0, 100.4)  # window 0.4 s, 100 s later: the gap must not count
    b.fail(100.4, 100.5, "boom")  # the window runs to 0.5 s
    m = Samples.merged([a, b])
    st = m.summary()
    assert st.n == 3 and st.errors == 1 and st.error_messages == ["boom"]
    assert math.isclose(st.p50_ms, 200.0) and math.isclose(st.max_ms, 400.0)
    assert math.isclose(st.throughput_per_s, 3 / 0.8)


def _lifecycle_round(durations: list[float], pod_ms: float, wall: float) -> ScenarioResult:
    s = Samples()
    t = 0.0
    for d in durations:
        s.add(t, t + d)
        t += d
    timeline = [{"step": "RunPodSandbox", "start_ms": 0.0, "end_ms": pod_ms}]
    extra = {"pods": len(durations), "pods_completed": len(durations), "pods_per_s": 0.0,
             "timeline": timeline, "timeline_error": ""}  # fmt: skip
    return ScenarioResult({"RunPodSandbox": s.summary()}, wall, extra, samples={"RunPodSandbox": s})


def test_merge_rounds_pools_calls_and_picks_the_median_timeline() -> None:
    from arun.bench.scenarios import merge_rounds

    rounds = [
        _lifecycle_round([0.1, 0.2], 300.0, 1.0),
        _lifecycle_round([0.3, 0.4], 900.0, 2.0),
        _lifecycle_round([0.5, 0.6], 500.0, 1.0),
    ]
    m = merge_rounds(rounds)
    st = m.steps["RunPodSandbox"]
    assert st.n == 6 and math.isclose(st.p50_ms, 350.0) and math.isclose(st.min_ms, 100.0)
    assert math.isclose(st.throughput_per_s, 6 / (0.3 + 0.7 + 1.1))
    assert m.wall_s == 4.0 and m.extra["pods_completed"] == 6 and m.extra["pods_per_s"] == 1.5
    assert m.extra["rounds"] == 3 and m.extra["pods"] == 2
    assert m.extra["timeline"][0]["end_ms"] == 500.0  # the median pod of 300, 500, 900
    assert merge_rounds(rounds[:1]) is rounds[0]


async def test_rounds_take_turns_and_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rounds=3`` over two endpoints runs A B A B A B, cleans up after each, and pools per endpoint."""
    from arun.bench import runner, scenarios

    order: list[str] = []
    cleanups: list[str] = []

    async def prepare(
        t: scenarios.Target, opts: scenarios.BenchOptions, sandbox: str, log: object
    ) -> list[str]:
        t.info = {"runtime_name": "fake"}
        return []

    async def fake(t: scenarios.Target, opts: scenarios.BenchOptions) -> ScenarioResult:
        order.append(t.name)
        n = order.count(t.name)
        return _lifecycle_round([0.01 * n], 10.0 * n, 0.1)

    async def cleanup_run(self: scenarios.Cleanup) -> list[str]:
        cleanups.append("x")
        return []

    monkeypatch.setattr(runner, "_prepare", prepare)
    monkeypatch.setitem(scenarios.SCENARIOS, "lifecycle", fake)
    monkeypatch.setattr(scenarios.Cleanup, "run", cleanup_run)
    report = await runner.run_bench(
        [EndpointSpec("a", "unix:///nonexistent/a.sock"), EndpointSpec("b", "unix:///nonexistent/b.sock")],
        ["lifecycle"],
        scenarios.BenchOptions(rounds=3),
    )
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert len(cleanups) >= 6
    for name in ("a", "b"):
        res = report.scenarios["lifecycle"][name]
        assert isinstance(res, ScenarioResult)
        assert res.steps["RunPodSandbox"].n == 3 and res.extra["rounds"] == 3
    assert report.to_json()["options"]["rounds"] == 3
    assert "3 rounds, endpoints taking turns" in format_report(report)


class _FakeCRI:
    """RunPodSandbox answers from a script; pod removals and sweeps are recorded."""

    def __init__(self, answers: list[object]) -> None:
        from arun.api.cri.runtime.v1 import api_pb2

        self.pb = api_pb2
        self.answers = answers
        self.sent: list[str] = []
        self.removed: list[str] = []
        self.swept = 0

    async def call(self, method: str, request: object, *, call_timeout: float | None = None) -> object:
        assert method == "RunPodSandbox"
        self.sent.append(request.config.metadata.name)  # type: ignore[attr-defined]
        answer = self.answers.pop(0)
        if answer == "hang":
            await asyncio.Event().wait()
        if isinstance(answer, Exception):
            raise answer
        return self.pb.RunPodSandboxResponse(pod_sandbox_id=str(answer))

    async def remove_pod(self, pod_id: str) -> None:
        self.removed.append(pod_id)

    async def remove_container(self, container_id: str) -> None:
        raise AssertionError("no containers here")

    async def remove_everything(self, labels: object = None) -> int:
        self.swept += 1
        return 0


async def test_a_cut_off_pod_is_asked_for_again_and_removed() -> None:
    """An interrupted RunPodSandbox may still make its pod (arun finishes it): cleanup re-sends
    it, waiting out a name the abandoned call still holds, and removes what it answers."""
    from arun.bench import scenarios

    cri = _FakeCRI(["hang", errdefs.AlreadyExistsError('name "p0" is reserved'), "pod-1"])
    cleanup = scenarios.Cleanup(cri, {"run": "x"})  # type: ignore[arg-type]
    t = scenarios.Target("fake", "unix:///fake", cri, "x", cleanup)  # type: ignore[arg-type]
    cfg = cri.pb.PodSandboxConfig(metadata=cri.pb.PodSandboxMetadata(name="p0", uid="u"))
    call = asyncio.ensure_future(scenarios.run_pod_sandbox(t, cfg))
    await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert list(cleanup.cut_off.values()) == [cfg]
    assert await cleanup.run() == []
    assert cri.sent == ["p0", "p0", "p0"] and cri.removed == ["pod-1"] and cri.swept == 1
    assert cleanup.cut_off == {}


async def test_answered_pod_calls_leave_nothing_cut_off() -> None:
    from arun.bench import scenarios

    cri = _FakeCRI(["pod-1", errdefs.InvalidArgumentError("bad config")])
    cleanup = scenarios.Cleanup(cri, {})  # type: ignore[arg-type]
    t = scenarios.Target("fake", "unix:///fake", cri, "x", cleanup)  # type: ignore[arg-type]
    cfg = cri.pb.PodSandboxConfig(metadata=cri.pb.PodSandboxMetadata(name="p0", uid="u"))
    assert (await scenarios.run_pod_sandbox(t, cfg)).pod_sandbox_id == "pod-1"
    with pytest.raises(errdefs.InvalidArgumentError):
        await scenarios.run_pod_sandbox(t, cfg)
    assert cleanup.cut_off == {} and cleanup.pods == {"pod-1"}
    assert await cleanup.run() == [] and cri.removed == ["pod-1"] and cri.sent == ["p0", "p0"]
