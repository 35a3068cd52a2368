"""Running scenarios against several CRI endpoints side by side, and cleaning up after them.

For each endpoint, in the order given: check it answers CRI ``Version`` and is
ready (``Status``), make sure the workload image and the pod sandbox image are
present (importing the images of ``arun.bench.images`` through the endpoint's
containerd API into ``k8s.io`` when they are not, and removing them again at
the end), then run each scenario on one endpoint after the other, so they never
compete for the machine. Whatever a scenario created is removed when it ends,
fails, or is interrupted; cleanup itself is shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from arun import errdefs
from arun.bench.cri import CRI
from arun.bench.daemons import BUSYBOX_IMAGE, SANDBOX_IMAGE, PrivateArun, PrivateContainerd
from arun.bench.scenarios import (
    RUN_LABEL,
    SCENARIOS,
    BenchOptions,
    Cleanup,
    ScenarioResult,
    Target,
    merge_rounds,
)
from arun.bench.stats import ratio
from arun.client.transport import parse_endpoint

__all__ = ["EndpointSpec", "Report", "run_bench", "uncancellable"]

SCHEMA = "arun.bench/v1"
T = TypeVar("T")
Log = Callable[[str], None]


@dataclass(frozen=True)
class EndpointSpec:
    """``address`` to use, or ``start`` (``arun`` / ``containerd``) for a private daemon."""

    name: str
    address: str = ""
    start: str = ""

    @classmethod
    def parse(cls, text: str) -> EndpointSpec:
        """``[NAME=]ADDRESS``; without a name, one is derived from the address."""
        name, sep, address = text.partition("=")
        if not sep or "/" in name or ":" in name:
            name, address = "", text
        parse_endpoint(address)  # InvalidArgumentError for a malformed address
        if not name:
            base = os.path.basename(address.rstrip("/")) or address
            name = re.sub(r"\.sock$", "", base) or address
        return cls(name=name, address=address)


@dataclass
class Report:
    started_at: str
    options: dict[str, Any]
    endpoints: list[dict[str, Any]]
    baseline: str
    scenarios: dict[str, dict[str, ScenarioResult | str]] = field(default_factory=dict)
    duration_s: float = 0.0
    cleanup_errors: list[str] = field(default_factory=list)
    interrupted: bool = False

    def ratios(self, scenario: str) -> dict[str, dict[str, dict[str, float | None]]]:
        """Per endpoint and step: p50/p95/p99 and throughput divided by the baseline's."""
        results = self.scenarios.get(scenario, {})
        base = results.get(self.baseline)
        out: dict[str, dict[str, dict[str, float | None]]] = {}
        if not isinstance(base, ScenarioResult):
            return out
        for name, res in results.items():
            if not isinstance(res, ScenarioResult):
                continue
            per: dict[str, dict[str, float | None]] = {}
            for step, st in res.steps.items():
                b = base.steps.get(step)
                if b is None:
                    continue
                per[step] = {
                    k: _clean(ratio(getattr(st, f), getattr(b, f)))
                    for k, f in (
                        ("p50", "p50_ms"),
                        ("p95", "p95_ms"),
                        ("p99", "p99_ms"),
                        ("throughput", "throughput_per_s"),
                    )
                }
            out[name] = per
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "interrupted": self.interrupted,
            "host": {"machine": platform.machine(), "kernel": platform.release(), "cpus": os.cpu_count()},
            "options": self.options,
            "endpoints": self.endpoints,
            "baseline": self.baseline,
            "scenarios": {
                name: {
                    "results": {
                        ep: (r.to_json() if isinstance(r, ScenarioResult) else {"error": r})
                        for ep, r in results.items()
                    },
                    "ratios": self.ratios(name),
                }
                for name, results in self.scenarios.items()
            },
            "cleanup_errors": self.cleanup_errors,
        }


def _clean(x: float) -> float | None:
    return None if x != x else round(x, 3)


async def uncancellable(coro: Awaitable[T]) -> T:
    """Run ``coro`` to the end even if the caller is cancelled meanwhile (cleanup)."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        current = asyncio.current_task()
        if current is not None:
            current.cancel()
    return result


async def _sandbox_image(cri: CRI, default: str) -> str:
    """The runtime's configured sandbox image (containerd reports it in verbose Status)."""
    with contextlib.suppress(errdefs.ArunError, ValueError):
        st = await cri.status(verbose=True)
        cfg = json.loads(st.info.get("config", "{}"))
        image = cfg.get("sandboxImage") or cfg.get("sandbox_image")
        if isinstance(image, str) and image:
            return image
    return default


async def _has_image(cri: CRI, ref: str) -> bool:
    r = await cri.call("ImageStatus", cri.pb.ImageStatusRequest(image=cri.pb.ImageSpec(image=ref)))
    return bool(r.image.id)


async def _prepare(t: Target, opts: BenchOptions, default_sandbox: str, log: Log) -> list[str]:
    """Check the endpoint and put the images it needs in place; the images imported (to remove later)."""
    v = await t.cri.version()
    t.info = {
        "runtime_name": v.runtime_name,
        "runtime_version": v.runtime_version,
        "api": v.runtime_api_version,
    }
    st = await t.cri.status()
    conds = {c.type: c for c in st.status.conditions}
    rt = conds.get("RuntimeReady")
    if rt is not None and not rt.status:
        raise errdefs.FailedPreconditionError(
            f"{t.name}: runtime not ready: {rt.reason} {rt.message}".strip()
        )
    net = conds.get("NetworkReady")
    if not opts.host_network and net is not None and not net.status:
        raise errdefs.FailedPreconditionError(
            f"{t.name}: pod network not ready ({net.message or net.reason}); "
            "give it a CNI config, or benchmark with --host-network"
        )
    t.sandbox_image = await _sandbox_image(t.cri, default_sandbox)
    missing = [ref for ref in (t.sandbox_image, opts.image) if not await _has_image(t.cri, ref)]
    if not missing:
        return []
    unknown = [ref for ref in missing if ref not in (t.sandbox_image, BUSYBOX_IMAGE)]
    if unknown:
        raise errdefs.NotFoundError(f"{t.name}: image {unknown[0]!r} is not present (pull it first)")
    log(f"{t.name}: importing {', '.join(missing)} through the containerd API (k8s.io)")
    from arun.bench.images import busybox_image, pause_image, write_oci_archive
    from arun.client import Client

    with tempfile.TemporaryDirectory(prefix="arun-bench-") as d:
        archive = Path(d) / "images.tar"
        built = [
            pause_image(t.sandbox_image) if ref == t.sandbox_image else busybox_image(ref) for ref in missing
        ]
        await asyncio.to_thread(write_oci_archive, archive, built)
        async with Client(t.address, namespace="k8s.io") as c:
            try:
                await c.import_archive(archive)
            except errdefs.UnimplementedError as e:
                raise errdefs.FailedPreconditionError(
                    f"{t.name}: images {missing} are missing and cannot be imported ({e})"
                ) from None
    return missing


async def run_bench(
    endpoints: Sequence[EndpointSpec],
    scenarios: Sequence[str],
    opts: BenchOptions,
    *,
    baseline: str | None = None,
    sandbox_image: str = SANDBOX_IMAGE,
    log: Log = lambda s: None,
) -> Report:
    """Run ``scenarios`` on every endpoint; the report (also when interrupted: then partial)."""
    if not endpoints:
        raise errdefs.InvalidArgumentError("no endpoint given")
    for s in scenarios:
        if s not in SCENARIOS:
            raise errdefs.InvalidArgumentError(f"unknown scenario {s!r} (known: {', '.join(SCENARIOS)})")
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise errdefs.InvalidArgumentError(f"endpoint names must differ: {names}")
    base = baseline or names[-1]
    if base not in names:
        raise errdefs.InvalidArgumentError(f"baseline {base!r} is not one of the endpoints {names}")
    run_id = os.urandom(4).hex()
    report = Report(
        started_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        options={k: v for k, v in vars(opts).items() if k != "log_root"},
        endpoints=[],
        baseline=base,
    )
    t0 = time.perf_counter()
    private: list[PrivateArun | PrivateContainerd] = []
    targets: list[Target] = []
    imported: dict[str, list[str]] = {}
    log_root = Path(tempfile.mkdtemp(prefix=f"arun-bench-{run_id}-"))
    opts.log_root = log_root
    try:
        for spec in endpoints:
            address = spec.address
            if spec.start:
                log(f"{spec.name}: starting a private {spec.start}")
                d: PrivateArun | PrivateContainerd
                if spec.start == "containerd":
                    d = await PrivateContainerd.start(sandbox_image=sandbox_image)
                elif spec.start == "arun":
                    d = await PrivateArun.start(sandbox_image=sandbox_image)
                else:
                    raise errdefs.InvalidArgumentError(f"cannot start {spec.start!r} (arun or containerd)")
                private.append(d)
                address = d.endpoint
            cri = CRI(address)
            t = Target(spec.name, address, cri, run_id, Cleanup(cri, {RUN_LABEL: run_id}))
            targets.append(t)
            try:
                imported[t.name] = await _prepare(t, opts, sandbox_image, log)
            except errdefs.UnavailableError as e:
                raise errdefs.UnavailableError(f"endpoint {spec.name} ({address}): {e}") from None
            report.endpoints.append({"name": t.name, "address": address, "started": spec.start, **t.info})
        rounds = max(1, opts.rounds)
        for scenario in scenarios:
            fn = SCENARIOS[scenario]
            results: dict[str, ScenarioResult | str] = {}
            report.scenarios[scenario] = results
            done: dict[str, list[ScenarioResult]] = {t.name: [] for t in targets}
            failed: dict[str, str] = {}
            # Endpoints take turns (A B A B ...), so that a change in the machine's load
            # during the run falls on all of them rather than on whichever ran last.
            for rnd in range(rounds):
                for t in targets:
                    if t.name in failed:
                        continue
                    log(
                        f"{scenario}: {t.name} ..."
                        + (f" (round {rnd + 1} of {rounds})" if rounds > 1 else "")
                    )
                    try:
                        done[t.name].append(await fn(t, opts))
                    except errdefs.ArunError as e:
                        failed[t.name] = str(e).splitlines()[0] if str(e) else type(e).__name__
                        log(f"{scenario}: {t.name} failed: {failed[t.name]}")
                    finally:
                        report.cleanup_errors += await uncancellable(t.cleanup.run())
                        if done[t.name] and t.name not in failed:
                            results[t.name] = merge_rounds(done[t.name])
                        elif t.name in failed:
                            results[t.name] = failed[t.name]
    except asyncio.CancelledError:
        report.interrupted = True
        raise
    finally:
        report.cleanup_errors += await uncancellable(_teardown(targets, imported, private, log_root))
        report.duration_s = time.perf_counter() - t0
    return report


async def _teardown(
    targets: list[Target],
    imported: dict[str, list[str]],
    private: list[PrivateArun | PrivateContainerd],
    log_root: Path,
) -> list[str]:
    errors: list[str] = []
    for t in targets:
        errors += await t.cleanup.run()
        for ref in imported.get(t.name, []):
            with contextlib.suppress(errdefs.NotFoundError):
                try:
                    await t.cri.call(
                        "RemoveImage", t.cri.pb.RemoveImageRequest(image=t.cri.pb.ImageSpec(image=ref))
                    )
                except errdefs.ArunError as e:
                    errors.append(f"{t.name}: image {ref}: {e}")
        await t.cri.close()
    for d in private:
        try:
            await d.stop()
        except Exception as e:
            errors.append(f"stopping {d.kind}: {e}")
    await asyncio.to_thread(_rmtree, log_root)
    return errors


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)
