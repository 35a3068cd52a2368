"""The CRI benchmark harness: ``arun bench`` from the command line, or from Python::

    from arun.bench import BenchOptions, EndpointSpec, run_bench, format_report

    report = await run_bench(
        [EndpointSpec("arun", "unix:///run/arun/arun.sock"),
         EndpointSpec("containerd", "unix:///run/containerd/containerd.sock")],
        ["lifecycle"],
        BenchOptions(pods=20),
    )
    print(format_report(report))
    json.dump(report.to_json(), open("r.json", "w"))

Modules: ``scenarios`` (what is timed), ``runner`` (endpoints, images, cleanup),
``stats``, ``report`` (text), ``chart`` (PNG), ``daemons`` (private containerd
and arun), ``images`` (built-in busybox and pause), ``registry`` (a private
docker-registry), ``cri`` (the raw CRI caller), ``cli``. docs/bench.md has the
details and the JSON fields. Names load on first use, so the ``arun`` command's
parser stays light.
"""

import importlib
from typing import Any

__all__ = [
    "BenchOptions",
    "EndpointSpec",
    "PrivateArun",
    "PrivateContainerd",
    "Report",
    "ScenarioResult",
    "format_report",
    "run_bench",
    "write_chart",
]

_LAZY = {
    "BenchOptions": "arun.bench.scenarios",
    "ScenarioResult": "arun.bench.scenarios",
    "EndpointSpec": "arun.bench.runner",
    "Report": "arun.bench.runner",
    "run_bench": "arun.bench.runner",
    "format_report": "arun.bench.report",
    "write_chart": "arun.bench.chart",
    "PrivateArun": "arun.bench.daemons",
    "PrivateContainerd": "arun.bench.daemons",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'arun.bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
