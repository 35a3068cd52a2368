"""The benchmark scenarios: what is sent to one CRI endpoint, timed step by step.

Every object a scenario creates carries the label ``arun-bench.run=<run id>``
and is recorded in the target's ``Cleanup``; the runner removes all of it when
the scenario ends, fails or is interrupted, then sweeps by label for anything
created but never recorded (a call cut off mid-flight).

- ``lifecycle``: N pods through RunPodSandbox, CreateContainer, StartContainer,
  StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox, one step at
  a time for all pods (each step at concurrency C, so its throughput is its
  own), plus the timeline of one more pod run alone.
- ``list``: ListContainers and ListPodSandbox with many containers present
  (created, not started) across a few pods.
- ``exec``: ExecSync of ``true`` into one running container, R times at concurrency C.
- ``pull``: PullImage of one reference R times, removing the image in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arun import errdefs
from arun.bench.cri import CRI
from arun.bench.stats import Samples, StepStats

__all__ = [
    "LIFECYCLE_STEPS",
    "SCENARIOS",
    "BenchOptions",
    "Cleanup",
    "ScenarioResult",
    "Target",
    "merge_rounds",
]

RUN_LABEL = "arun-bench.run"
LIFECYCLE_STEPS = (
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
)
# A workload that stops on SIGTERM (busybox sleep as PID 1 would ignore it).
WORKLOAD = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


@dataclass
class BenchOptions:
    pods: int = 10
    concurrency: int = 1
    image: str = "docker.io/library/busybox:arun"
    host_network: bool = False
    containers: int = 1000  # list scenario
    list_pods: int = 10  # list scenario
    repeat: int = 50  # list, exec and pull iterations
    warmup: int = 1
    stop_timeout: int = 10
    pull_image: str = ""
    cgroup_parent: str = ""
    rounds: int = 1  # each scenario runs this often per endpoint, endpoints taking turns
    command: list[str] | None = None  # the workload's command (default WORKLOAD)
    log_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))


@dataclass
class ScenarioResult:
    steps: dict[str, StepStats]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    # The raw durations behind ``steps``, so that rounds can be merged (not in the JSON).
    samples: dict[str, Samples] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": {k: v.to_json() for k, v in self.steps.items()},
            "wall_s": round(self.wall_s, 3),
            **self.extra,
        }


class Cleanup:
    """Pods (and stray containers) one target must lose before the run ends."""

    def __init__(self, cri: CRI, labels: dict[str, str]) -> None:
        self.cri = cri
        self.labels = labels
        self.pods: set[str] = set()
        self.containers: set[str] = set()
        self.images: set[str] = set()
        # RunPodSandbox calls cut off without an answer (interrupted, timed out), by token:
        # the runtime may still be making those pods (arun finishes a sandbox whose caller
        # left), after the sweep by label has looked.
        self.cut_off: dict[object, Any] = {}

    async def settle_cut_off(self, within: float = 30.0) -> tuple[list[str], list[str]]:
        """The pod ids of the cut-off RunPodSandbox calls, and errors.

        Each call is sent again with the same config, as kubelet retries: a runtime still
        making that pod answers with it once done (arun), one that gave it up makes it anew
        (containerd); either way the answer names the pod to remove. A name still reserved
        by the abandoned call is retried until ``within`` seconds have passed.
        """
        ids: list[str] = []
        errors: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        for token, cfg in list(self.cut_off.items()):
            while True:
                left = deadline - loop.time()
                try:
                    r = await self.cri.call(
                        "RunPodSandbox",
                        self.cri.pb.RunPodSandboxRequest(config=cfg),
                        call_timeout=max(left, 1.0),
                    )
                    ids.append(r.pod_sandbox_id)
                    break
                except errdefs.ArunError as e:
                    if deadline - loop.time() <= 0.5:
                        errors.append(f"pod {cfg.metadata.name}: cut off, not settled: {e}")
                        break
                    await asyncio.sleep(0.5)
            self.cut_off.pop(token, None)
        return ids, errors

    async def run(self) -> list[str]:
        """Remove everything recorded, then sweep by label; the errors met (strings)."""
        errors: list[str] = []
        if self.cut_off:
            settled, errors = await self.settle_cut_off()
            self.pods.update(settled)
        sem = asyncio.Semaphore(8)

        async def one(what: str, coro: Awaitable[None]) -> None:
            async with sem:
                try:
                    await coro
                except errdefs.ArunError as e:
                    errors.append(f"{what}: {e}")

        await asyncio.gather(*(one(f"container {c}", self.cri.remove_container(c)) for c in self.containers))
        await asyncio.gather(*(one(f"pod {p}", self.cri.remove_pod(p)) for p in self.pods))
        self.containers.clear()
        self.pods.clear()
        try:
            await self.cri.remove_everything(self.labels)
        except errdefs.ArunError as e:
            errors.append(f"sweep: {e}")
        for ref in list(self.images):
            with contextlib.suppress(errdefs.NotFoundError):
                try:
                    await self.cri.call(
                        "RemoveImage", self.cri.pb.RemoveImageRequest(image=self.cri.pb.ImageSpec(image=ref))
                    )
                except errdefs.ArunError as e:
                    errors.append(f"image {ref}: {e}")
            self.images.discard(ref)
        return errors


@dataclass
class Target:
    """One endpoint under test."""

    name: str
    address: str
    cri: CRI
    run_id: str
    cleanup: Cleanup
    sandbox_image: str = ""
    info: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return {RUN_LABEL: self.run_id}


class _Timer:
    def __init__(self, samples: dict[str, Samples]) -> None:
        self.samples = samples

    async def time(self, step: str, coro: Awaitable[Any]) -> Any:
        s = self.samples.setdefault(step, Samples())
        start = time.perf_counter()
        try:
            result = await coro
        except errdefs.ArunError as e:
            s.fail(start, time.perf_counter(), str(e).splitlines()[0] if str(e) else type(e).__name__)
            raise
        s.add(start, time.perf_counter())
        return result


async def run_pod_sandbox(t: Target, config: Any) -> Any:
    """RunPodSandbox, recorded for cleanup; a call cut off leaves its config with the cleanup.

    Cut off means cancelled (the run was interrupted) or past its deadline: the runtime
    may still finish that pod, so ``Cleanup`` asks for it again (``settle_cut_off``).
    """
    token = object()
    t.cleanup.cut_off[token] = config
    try:
        r = await t.cri.call("RunPodSandbox", t.cri.pb.RunPodSandboxRequest(config=config))
    except (asyncio.CancelledError, errdefs.DeadlineExceededError):
        raise
    except BaseException:
        del t.cleanup.cut_off[token]
        raise
    del t.cleanup.cut_off[token]
    t.cleanup.pods.add(r.pod_sandbox_id)
    return r


async def _bounded(concurrency: int, items: list[Any], fn: Callable[[Any], Awaitable[None]]) -> None:
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(item: Any) -> None:
        async with sem:
            with contextlib.suppress(errdefs.ArunError):
                await fn(item)

    await asyncio.gather(*(one(i) for i in items))


def pod_config(t: Target, opts: BenchOptions, name: str) -> Any:
    pb = t.cri.pb
    uid = os.urandom(8).hex()
    log_dir = opts.log_root / f"arun-bench-{t.run_id}" / name
    # kubelet creates the pod's log directory before RunPodSandbox; so does the harness.
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="arun-bench", attempt=0),
        hostname=name[:63],
        log_directory=str(log_dir),
        labels=t.labels,
    )
    if opts.cgroup_parent:
        cfg.linux.cgroup_parent = opts.cgroup_parent
    if opts.host_network:
        cfg.linux.security_context.namespace_options.network = pb.NODE
    return cfg


def container_config(t: Target, opts: BenchOptions, name: str, command: list[str] | None = None) -> Any:
    pb = t.cri.pb
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=opts.image),
        command=command or opts.command or WORKLOAD,
        log_path=f"{name}.log",
        labels=t.labels,
    )


@dataclass
class _Pod:
    name: str
    config: Any
    pod_id: str = ""
    container_id: str = ""
    failed: bool = False


async def _pod_lifecycle(t: Target, opts: BenchOptions, timer: _Timer, pod: _Pod) -> list[dict[str, Any]]:
    """One pod through all seven steps, in order; the timeline (ms from the pod's start)."""
    pb, cri = t.cri.pb, t.cri
    timeline: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    async def step(name: str, coro: Awaitable[Any]) -> Any:
        start = time.perf_counter()
        result = await timer.time(name, coro)
        timeline.append(
            {
                "step": name,
                "start_ms": round((start - t0) * 1000, 3),
                "end_ms": round((time.perf_counter() - t0) * 1000, 3),
            }
        )
        return result

    r = await step("RunPodSandbox", run_pod_sandbox(t, pod.config))
    pod.pod_id = r.pod_sandbox_id
    t.cleanup.pods.add(pod.pod_id)
    c = await step(
        "CreateContainer",
        cri.call(
            "CreateContainer",
            pb.CreateContainerRequest(
                pod_sandbox_id=pod.pod_id, config=container_config(t, opts, "work"), sandbox_config=pod.config
            ),
        ),
    )
    pod.container_id = c.container_id
    await step(
        "StartContainer", cri.call("StartContainer", pb.StartContainerRequest(container_id=pod.container_id))
    )
    await step(
        "StopContainer",
        cri.call(
            "StopContainer", pb.StopContainerRequest(container_id=pod.container_id, timeout=opts.stop_timeout)
        ),
    )
    await step(
        "RemoveContainer",
        cri.call("RemoveContainer", pb.RemoveContainerRequest(container_id=pod.container_id)),
    )
    await step(
        "StopPodSandbox", cri.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pod.pod_id))
    )
    await step(
        "RemovePodSandbox",
        cri.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=pod.pod_id)),
    )
    t.cleanup.pods.discard(pod.pod_id)
    return timeline


async def lifecycle(t: Target, opts: BenchOptions) -> ScenarioResult:
    pb, cri = t.cri.pb, t.cri
    for i in range(opts.warmup):
        await _pod_lifecycle(
            t, opts, _Timer({}), _Pod(f"warmup-{i}", pod_config(t, opts, f"warmup-{t.run_id}-{i}"))
        )
    samples: dict[str, Samples] = {s: Samples() for s in LIFECYCLE_STEPS}
    timer = _Timer(samples)
    pods = [_Pod(f"p{i}", pod_config(t, opts, f"bench-{t.run_id}-{i}")) for i in range(opts.pods)]
    wall0 = time.perf_counter()

    async def run_pod(p: _Pod) -> None:
        try:
            r = await timer.time("RunPodSandbox", run_pod_sandbox(t, p.config))
        except errdefs.ArunError:
            p.failed = True
            raise
        p.pod_id = r.pod_sandbox_id
        t.cleanup.pods.add(p.pod_id)

    async def create(p: _Pod) -> None:
        req = pb.CreateContainerRequest(
            pod_sandbox_id=p.pod_id, config=container_config(t, opts, "work"), sandbox_config=p.config
        )
        try:
            r = await timer.time("CreateContainer", cri.call("CreateContainer", req))
        except errdefs.ArunError:
            p.failed = True
            raise
        p.container_id = r.container_id

    async def simple(step: str, p: _Pod, req: Any) -> None:
        try:
            await timer.time(step, cri.call(step, req))
        except errdefs.ArunError:
            p.failed = True
            raise

    def live(need_container: bool = True) -> list[_Pod]:
        return [p for p in pods if not p.failed and p.pod_id and (p.container_id or not need_container)]

    c = opts.concurrency
    await _bounded(c, pods, run_pod)
    await _bounded(c, live(False), create)
    await _bounded(
        c,
        live(),
        lambda p: simple("StartContainer", p, pb.StartContainerRequest(container_id=p.container_id)),
    )
    await _bounded(
        c,
        live(),
        lambda p: simple(
            "StopContainer",
            p,
            pb.StopContainerRequest(container_id=p.container_id, timeout=opts.stop_timeout),
        ),
    )
    await _bounded(
        c,
        live(),
        lambda p: simple("RemoveContainer", p, pb.RemoveContainerRequest(container_id=p.container_id)),
    )
    # Pods whose container failed still go through the pod steps (they must go anyway).
    with_pod = [p for p in pods if p.pod_id]
    await _bounded(
        c, with_pod, lambda p: simple("StopPodSandbox", p, pb.StopPodSandboxRequest(pod_sandbox_id=p.pod_id))
    )
    gone: list[_Pod] = []

    async def remove(p: _Pod) -> None:
        await simple("RemovePodSandbox", p, pb.RemovePodSandboxRequest(pod_sandbox_id=p.pod_id))
        gone.append(p)

    await _bounded(c, with_pod, remove)
    for p in gone:
        t.cleanup.pods.discard(p.pod_id)
    wall = time.perf_counter() - wall0
    timeline: list[dict[str, Any]] = []
    timeline_error = ""
    try:
        timeline = await _pod_lifecycle(
            t, opts, _Timer({}), _Pod("timeline", pod_config(t, opts, f"timeline-{t.run_id}"))
        )
    except errdefs.ArunError as e:
        timeline_error = str(e).splitlines()[0] if str(e) else type(e).__name__
    complete = sum(1 for p in pods if p in gone and not p.failed)
    return ScenarioResult(
        steps={k: v.summary() for k, v in samples.items()},
        samples=samples,
        wall_s=wall,
        extra={
            "pods": opts.pods,
            "concurrency": opts.concurrency,
            "pods_completed": complete,
            "pods_per_s": round(complete / wall, 3) if wall > 0 else None,
            "timeline": timeline,
            "timeline_error": timeline_error,
        },
    )


async def list_at_scale(t: Target, opts: BenchOptions) -> ScenarioResult:
    pb, cri = t.cri.pb, t.cri
    npods = max(1, min(opts.list_pods, opts.containers or 1))
    pods = [pod_config(t, opts, f"list-{t.run_id}-{i}") for i in range(npods)]
    pod_ids: list[str] = []
    setup = Samples()

    async def mkpod(cfg: Any) -> None:
        s = time.perf_counter()
        r = await run_pod_sandbox(t, cfg)
        setup.add(s, time.perf_counter())
        t.cleanup.pods.add(r.pod_sandbox_id)
        pod_ids.append(r.pod_sandbox_id)

    setup_errors: list[errdefs.ArunError] = []

    async def recording(coro: Awaitable[None]) -> None:
        try:
            await coro
        except errdefs.ArunError as e:
            setup_errors.append(e)
            raise

    await _bounded(max(opts.concurrency, 4), pods, lambda cfg: recording(mkpod(cfg)))
    if len(pod_ids) < len(pods):
        raise _setup_failed("RunPodSandbox", len(pods) - len(pod_ids), len(pods), setup_errors)
    by_id = dict(zip(pod_ids, pods, strict=False))
    created = 0

    async def mkctr(i: int) -> None:
        nonlocal created
        pid = pod_ids[i % len(pod_ids)]
        cfg = by_id.get(pid, pods[0])
        await cri.call(
            "CreateContainer",
            pb.CreateContainerRequest(
                pod_sandbox_id=pid, config=container_config(t, opts, f"c{i}"), sandbox_config=cfg
            ),
        )
        created += 1

    s0 = time.perf_counter()
    await _bounded(max(opts.concurrency, 8), list(range(opts.containers)), lambda i: recording(mkctr(i)))
    create_s = time.perf_counter() - s0
    if created < opts.containers:
        raise _setup_failed("CreateContainer", opts.containers - created, opts.containers, setup_errors)
    samples: dict[str, Samples] = {"ListContainers": Samples(), "ListPodSandbox": Samples()}
    timer = _Timer(samples)
    listed = 0
    for _ in range(opts.repeat):
        r = await timer.time("ListContainers", cri.call("ListContainers", pb.ListContainersRequest()))
        listed = len(r.containers)
        await timer.time("ListPodSandbox", cri.call("ListPodSandbox", pb.ListPodSandboxRequest()))
    return ScenarioResult(
        steps={k: v.summary() for k, v in samples.items()},
        samples=samples,
        wall_s=sum(sum(s.durations) for s in samples.values()),
        extra={"containers": created, "listed": listed, "pods": len(pod_ids), "setup_s": round(create_s, 3)},
    )


def _setup_failed(step: str, failed: int, total: int, errors: list[errdefs.ArunError]) -> errdefs.ArunError:
    """The first setup error, of its own class, saying how many of the calls failed."""
    first = errors[0] if errors else errdefs.UnknownError("no error recorded")
    msg = str(first).splitlines()[0] if str(first) else type(first).__name__
    return type(first)(f"setup: {step}: {failed} of {total} calls failed: {msg}")


async def exec_sync(t: Target, opts: BenchOptions) -> ScenarioResult:
    pb, cri = t.cri.pb, t.cri
    cfg = pod_config(t, opts, f"exec-{t.run_id}")
    r = await run_pod_sandbox(t, cfg)
    pod_id = r.pod_sandbox_id
    t.cleanup.pods.add(pod_id)
    c = await cri.call(
        "CreateContainer",
        pb.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=container_config(t, opts, "exec"), sandbox_config=cfg
        ),
    )
    await cri.call("StartContainer", pb.StartContainerRequest(container_id=c.container_id))
    samples = {"ExecSync": Samples()}
    timer = _Timer(samples)
    bad: list[str] = []

    async def one(_: int) -> None:
        resp = await timer.time(
            "ExecSync",
            cri.call(
                "ExecSync", pb.ExecSyncRequest(container_id=c.container_id, cmd=["echo", "ok"], timeout=30)
            ),
        )
        if resp.exit_code != 0 or resp.stdout != b"ok\n":
            bad.append(f"exit {resp.exit_code}, stdout {resp.stdout[:40]!r}")

    wall0 = time.perf_counter()
    await _bounded(opts.concurrency, list(range(opts.repeat)), one)
    wall = time.perf_counter() - wall0
    await t.cleanup.cri.remove_pod(pod_id)
    t.cleanup.pods.discard(pod_id)
    return ScenarioResult(
        steps={k: v.summary() for k, v in samples.items()},
        samples=samples,
        wall_s=wall,
        extra={"concurrency": opts.concurrency, "wrong_output": bad[:5]},
    )


async def pull(t: Target, opts: BenchOptions) -> ScenarioResult:
    pb, cri = t.cri.pb, t.cri
    if not opts.pull_image:
        raise errdefs.InvalidArgumentError("pull: no image to pull (--pull-image REF or --local-registry)")
    spec = pb.ImageSpec(image=opts.pull_image)
    samples = {"PullImage": Samples(), "RemoveImage": Samples()}
    timer = _Timer(samples)
    with contextlib.suppress(errdefs.NotFoundError):
        await cri.call("RemoveImage", pb.RemoveImageRequest(image=spec))
    wall0 = time.perf_counter()
    for _ in range(max(1, opts.repeat)):
        t.cleanup.images.add(opts.pull_image)
        await timer.time(
            "PullImage", cri.call("PullImage", pb.PullImageRequest(image=spec), call_timeout=600)
        )
        await timer.time("RemoveImage", cri.call("RemoveImage", pb.RemoveImageRequest(image=spec)))
        t.cleanup.images.discard(opts.pull_image)
    return ScenarioResult(
        steps={k: v.summary() for k, v in samples.items()},
        samples=samples,
        wall_s=time.perf_counter() - wall0,
        extra={"image": opts.pull_image},
    )


def merge_rounds(rounds: list[ScenarioResult]) -> ScenarioResult:
    """One endpoint's results of several rounds of a scenario as one result.

    Steps pool their durations (percentiles over all calls) and their windows
    (throughput = calls / summed windows); ``wall_s`` and ``pods_completed``
    add up and ``pods_per_s`` is recomputed from them; ``wrong_output``
    collects; the timeline is the one of the round whose pod took the median
    time; other fields are the first round's. ``rounds`` says how many.
    """
    if len(rounds) == 1:
        return rounds[0]
    names: list[str] = []
    for r in rounds:
        names += [k for k in r.samples if k not in names]
    samples = {k: Samples.merged([r.samples[k] for r in rounds if k in r.samples]) for k in names}
    wall = sum(r.wall_s for r in rounds)
    extra: dict[str, Any] = dict(rounds[0].extra)
    extra["rounds"] = len(rounds)
    if "pods_completed" in extra:
        done = sum(int(r.extra.get("pods_completed") or 0) for r in rounds)
        extra["pods_completed"] = done
        extra["pods_per_s"] = round(done / wall, 3) if wall > 0 else None
    if "wrong_output" in extra:
        extra["wrong_output"] = [w for r in rounds for w in r.extra.get("wrong_output", [])][:5]
    if "timeline" in extra:
        timed = sorted(
            (r.extra["timeline"][-1]["end_ms"], i) for i, r in enumerate(rounds) if r.extra.get("timeline")
        )
        if timed:
            median = rounds[timed[(len(timed) - 1) // 2][1]]
            extra["timeline"] = median.extra["timeline"]
            extra["timeline_error"] = ""
    return ScenarioResult(
        steps={k: v.summary() for k, v in samples.items()}, wall_s=wall, extra=extra, samples=samples
    )


Scenario = Callable[[Target, BenchOptions], Awaitable[ScenarioResult]]
SCENARIOS: dict[str, Scenario] = {
    "lifecycle": lifecycle,
    "list": list_at_scale,
    "exec": exec_sync,
    "pull": pull,
}


def nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x
