"""``arun bench`` (also ``python -m arun.bench``): CRI endpoints side by side.

::

    arun bench --endpoint unix:///run/arun/arun.sock --endpoint unix:///run/containerd/containerd.sock \\
               --scenario lifecycle --pods 20
    arun bench --start arun --start containerd --scenario lifecycle,exec --json out.json --chart out.png

Exit status: 0 when every scenario ran on every endpoint; 1 when something
failed (one line on stderr per failure); 2 for bad arguments; 130 when
interrupted (after cleaning up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
from collections.abc import Sequence

from arun import errdefs

# Kept here (checked against arun.bench by the tests) so that building the ``arun``
# parser does not load the harness and the client.
SCENARIO_NAMES = ("lifecycle", "list", "exec", "pull")
BUSYBOX_IMAGE = "docker.io/library/busybox:arun"
SANDBOX_IMAGE = "registry.k8s.io/pause:3.6"

__all__ = ["add_arguments", "main", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-e",
        "--endpoint",
        action="append",
        default=[],
        metavar="[NAME=]ADDRESS",
        help="a CRI endpoint (unix:///path, /path or tcp://host:port); repeat for side by side",
    )
    p.add_argument(
        "--start",
        action="append",
        default=[],
        choices=["arun", "containerd"],
        help="start a private daemon of this kind on temporary directories and benchmark it",
    )
    p.add_argument(
        "-s",
        "--scenario",
        action="append",
        default=[],
        help=f"scenario(s), comma separated: {', '.join(SCENARIO_NAMES)} (default lifecycle)",
    )
    p.add_argument("--pods", type=int, default=10, help="pods in the lifecycle scenario (default 10)")
    p.add_argument("-c", "--concurrency", type=int, default=1, help="calls in flight per step (default 1)")
    p.add_argument("--containers", type=int, default=1000, help="containers present for the list scenario")
    p.add_argument("--list-pods", type=int, default=10, help="pods the list scenario spreads them over")
    p.add_argument("--repeat", type=int, default=50, help="iterations of list, exec and pull (default 50)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each scenario this often per endpoint, endpoints taking turns (A B A B ...); "
        "the numbers pool all rounds (default 1)",
    )
    p.add_argument("--warmup", type=int, default=1, help="unmeasured pods before the lifecycle (default 1)")
    p.add_argument("--stop-timeout", type=int, default=10, help="StopContainer grace seconds (default 10)")
    p.add_argument(
        "--image", default=BUSYBOX_IMAGE, help=f"workload image (default {BUSYBOX_IMAGE}, built in)"
    )
    p.add_argument(
        "--command",
        dest="workload_command",  # not "command": that is the arun parser's sub-command
        default="",
        help="the workload's command (shell words; default: a shell sleeping until SIGTERM)",
    )
    p.add_argument("--pull-image", default="", help="image reference for the pull scenario")
    p.add_argument(
        "--local-registry",
        action="store_true",
        help="pull scenario: serve the built-in busybox image from a private docker-registry on 127.0.0.1",
    )
    p.add_argument("--sandbox-image", default=SANDBOX_IMAGE, help="pause image when the runtime does not say")
    p.add_argument("--host-network", action="store_true", help="pods share the host network (no CNI)")
    p.add_argument("--cgroup-parent", default="", help="cgroup parent of the pods")
    p.add_argument("--baseline", default=None, help="endpoint the ratios divide by (default: the last one)")
    p.add_argument(
        "--json", dest="json_path", metavar="FILE", help="write the results as JSON (docs/bench.md)"
    )
    p.add_argument("--chart", metavar="FILE", help="write a PNG chart of the results")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def _scenarios(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for v in values or ["lifecycle"]:
        for s in v.split(","):
            s = s.strip()
            if s and s not in out:
                out.append(s)
    return out


async def run(args: argparse.Namespace) -> int:
    from arun.bench.chart import write_chart
    from arun.bench.report import format_report
    from arun.bench.runner import EndpointSpec, run_bench
    from arun.bench.scenarios import BenchOptions, ScenarioResult

    endpoints = [EndpointSpec.parse(e) for e in args.endpoint]
    for kind in args.start:
        name = kind if kind not in [e.name for e in endpoints] else f"{kind}-private"
        endpoints.append(EndpointSpec(name=name, start=kind))
    if not endpoints:
        raise errdefs.InvalidArgumentError("give at least one --endpoint or --start")
    for n in ("pods", "concurrency", "repeat", "rounds"):
        if getattr(args, n) < 1:
            raise errdefs.InvalidArgumentError(f"--{n} must be at least 1")
    opts = BenchOptions(
        pods=args.pods,
        concurrency=args.concurrency,
        image=args.image,
        host_network=args.host_network,
        containers=args.containers,
        list_pods=args.list_pods,
        repeat=args.repeat,
        warmup=args.warmup,
        stop_timeout=args.stop_timeout,
        pull_image=args.pull_image,
        cgroup_parent=args.cgroup_parent,
        rounds=args.rounds,
        command=shlex.split(args.workload_command) if args.workload_command else None,
    )
    scenarios = _scenarios(args.scenario)

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"bench: {msg}", file=sys.stderr, flush=True)

    registry = None
    if args.local_registry:
        from arun.bench.registry import LocalRegistry

        registry = await LocalRegistry.start()
        opts.pull_image = await registry.push_busybox()
        log(f"local registry serves {opts.pull_image}")
    try:
        report = await run_bench(
            endpoints, scenarios, opts, baseline=args.baseline, sandbox_image=args.sandbox_image, log=log
        )
    finally:
        if registry is not None:
            await registry.stop()
    print(format_report(report))
    if args.json_path:
        text = json.dumps(report.to_json(), indent=2) + "\n"
        await asyncio.to_thread(_write_text, args.json_path, text)
    if args.chart:
        write_chart(report, args.chart)
    failed = [
        f"{scenario} on {ep}: {r}"
        for scenario, results in report.scenarios.items()
        for ep, r in results.items()
        if not isinstance(r, ScenarioResult)
    ]
    failed += [
        f"{scenario} on {ep}: {st_name}: {st.errors} of {st.errors + st.n} calls failed"
        + (f": {st.error_messages[0]}" if st.error_messages else "")
        for scenario, results in report.scenarios.items()
        for ep, r in results.items()
        if isinstance(r, ScenarioResult)
        for st_name, st in r.steps.items()
        if st.errors
    ]
    for line in failed + [f"cleanup: {e}" for e in report.cleanup_errors]:
        print(f"arun bench: {line}", file=sys.stderr)
    return 1 if failed or report.cleanup_errors else 0


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _run_with_signals(args: argparse.Namespace) -> int:
    """Run the bench; Ctrl-C cancels it (cleanup still runs), a third Ctrl-C abandons cleanup."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        hits = 0

        def on_sigint() -> None:
            nonlocal hits
            hits += 1
            if hits == 1 and task is not None:
                print(
                    "\narun bench: interrupted, cleaning up (Ctrl-C twice more to abandon)", file=sys.stderr
                )
                task.cancel()
            elif hits >= 3:
                print("arun bench: cleanup abandoned; things may be left behind", file=sys.stderr)
                raise SystemExit(130)

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigint)
        try:
            return await run(args)
        except asyncio.CancelledError:
            return 130
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


def main(args: argparse.Namespace) -> int:
    try:
        return _run_with_signals(args)
    except errdefs.ArunError as e:
        msg = " ".join(str(e).split())
        print(f"arun bench: {msg}", file=sys.stderr)
        return 2 if isinstance(e, errdefs.InvalidArgumentError) else 1
    except OSError as e:
        print(f"arun bench: {e}", file=sys.stderr)
        return 1


def cli(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="arun bench", description="Benchmark CRI endpoints side by side.")
    add_arguments(p)
    return main(p.parse_args(argv))
