"""The harness's report as text: one table per scenario, endpoints side by side, ratios to the baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence

from arun.bench.runner import Report
from arun.bench.scenarios import ScenarioResult

__all__ = ["format_report", "render_table"]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell, two spaces apart; ``right``: right-aligned column indexes."""
    widths = [len(h) for h in headers]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _ms(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def _rate(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def format_report(report: Report) -> str:
    parts: list[str] = []
    for ep in report.endpoints:
        parts.append(
            f"{ep['name']}: {ep['address']}  ({ep.get('runtime_name', '?')} {ep.get('runtime_version', '?')})"
        )
    names = [e["name"] for e in report.endpoints]
    others = [n for n in names if n != report.baseline]
    for scenario, results in report.scenarios.items():
        parts.append("")
        rounds = int(report.options.get("rounds") or 1)
        parts.append(
            f"== {scenario}  (ms; ratios are p50 and p99 of each endpoint over {report.baseline}"
            + (f"; {rounds} rounds, endpoints taking turns)" if rounds > 1 else ")")
        )
        headers = ["step"]
        for n in names:
            headers += [f"{n} p50", "p95", "p99", "ops/s"]
        for n in others:
            headers += [f"{n}/{report.baseline} p50", "p99"]
        steps: list[str] = []
        for r in results.values():
            if isinstance(r, ScenarioResult):
                steps += [s for s in r.steps if s not in steps]
        ratios = report.ratios(scenario)
        rows: list[list[str]] = []
        for step in steps:
            row = [step]
            for n in names:
                res = results.get(n)
                st = res.steps.get(step) if isinstance(res, ScenarioResult) else None
                if st is None:
                    row += ["-", "-", "-", "-"]
                else:
                    row += [_ms(st.p50_ms), _ms(st.p95_ms), _ms(st.p99_ms), _rate(st.throughput_per_s)]
                    if st.errors:
                        row[-1] += f" ({st.errors} err)"
            for n in others:
                rr = ratios.get(n, {}).get(step, {})
                row += [_ratio(rr.get("p50")), _ratio(rr.get("p99"))]
            rows.append(row)
        parts.append(render_table(headers, rows, right=range(1, len(headers))))
        rates = {
            n: r.extra.get("pods_per_s")
            for n, r in results.items()
            if isinstance(r, ScenarioResult) and r.extra.get("pods_per_s")
        }
        if rates:
            base_rate = rates.get(report.baseline)
            line = "pods/s through all seven steps: " + ", ".join(f"{n} {v:.2f}" for n, v in rates.items())
            if base_rate:
                line += (
                    " ("
                    + ", ".join(
                        f"{n}/{report.baseline} {v / base_rate:.2f}x"
                        for n, v in rates.items()
                        if n != report.baseline
                    )
                    + ")"
                )
            parts.append(line)
        for n in names:
            got = results.get(n)
            if isinstance(got, str):
                parts.append(f"{n}: failed: {got}")
            elif got is not None:
                extra = {
                    k: v for k, v in got.extra.items() if k != "timeline" and v not in (None, "", [], {})
                }
                if extra:
                    parts.append(
                        f"{n}: "
                        + ", ".join(f"{k}={v}" for k, v in extra.items())
                        + f", wall_s={got.wall_s:.2f}"
                    )
                for st_name, st in got.steps.items():
                    for msg in st.error_messages:
                        parts.append(f"{n}: {st_name} error: {msg}")
        timelines = [
            (n, r.extra["timeline"])
            for n, r in results.items()
            if isinstance(r, ScenarioResult) and r.extra.get("timeline")
        ]
        if timelines:
            parts.append("")
            parts.append("timeline of one pod (ms from its start: start..end)")
            steps_t = [e["step"] for e in timelines[0][1]]
            rows = []
            for step in steps_t:
                row = [step]
                for _, tl in timelines:
                    e = next((x for x in tl if x["step"] == step), None)
                    row.append("-" if e is None else f"{e['start_ms']:.1f}..{e['end_ms']:.1f}")
                rows.append(row)
            parts.append(
                render_table(["step", *(n for n, _ in timelines)], rows, right=range(1, len(timelines) + 1))
            )
    if report.cleanup_errors:
        parts.append("")
        parts.append("cleanup problems:")
        parts += [f"  {e}" for e in report.cleanup_errors]
    if report.interrupted:
        parts.append("(interrupted: partial results)")
    return "\n".join(parts)
