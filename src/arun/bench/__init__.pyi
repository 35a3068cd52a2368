from arun.bench.chart import write_chart as write_chart
from arun.bench.daemons import PrivateArun as PrivateArun
from arun.bench.daemons import PrivateContainerd as PrivateContainerd
from arun.bench.report import format_report as format_report
from arun.bench.runner import EndpointSpec as EndpointSpec
from arun.bench.runner import Report as Report
from arun.bench.runner import run_bench as run_bench
from arun.bench.scenarios import BenchOptions as BenchOptions
from arun.bench.scenarios import ScenarioResult as ScenarioResult

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
