"""Latency samples and their summaries (percentiles by linear interpolation, like numpy's default)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Samples", "StepStats", "percentile", "ratio"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values; NaN when empty."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


@dataclass
class Samples:
    """Durations (seconds) of one step, with the wall-clock window they ran in."""

    durations: list[float] = field(default_factory=list)
    errors: int = 0
    first_start: float = math.inf
    last_end: float = -math.inf
    error_messages: list[str] = field(default_factory=list)
    # Windows of earlier rounds (``merged``): each round's window counts, the gaps between them do not.
    prior_window_s: float = 0.0

    def add(self, start: float, end: float) -> None:
        self.durations.append(end - start)
        self.first_start = min(self.first_start, start)
        self.last_end = max(self.last_end, end)

    def fail(self, start: float, end: float, message: str) -> None:
        self.errors += 1
        self.first_start = min(self.first_start, start)
        self.last_end = max(self.last_end, end)
        if len(self.error_messages) < 5 and message not in self.error_messages:
            self.error_messages.append(message)

    @property
    def window_s(self) -> float:
        """Seconds of wall clock the step's calls ran in (summed over merged rounds)."""
        own = self.last_end - self.first_start if self.last_end >= self.first_start else 0.0
        return self.prior_window_s + own

    @classmethod
    def merged(cls, parts: Sequence[Samples]) -> Samples:
        """One step's samples of several rounds as one: all durations, errors and windows."""
        out = cls()
        for p in parts:
            out.durations += p.durations
            out.errors += p.errors
            out.prior_window_s += p.window_s
            for m in p.error_messages:
                if len(out.error_messages) < 5 and m not in out.error_messages:
                    out.error_messages.append(m)
        return out

    def summary(self) -> StepStats:
        d = sorted(self.durations)
        window = self.window_s if self.durations else 0.0
        return StepStats(
            n=len(d),
            errors=self.errors,
            p50_ms=percentile(d, 50) * 1000,
            p95_ms=percentile(d, 95) * 1000,
            p99_ms=percentile(d, 99) * 1000,
            mean_ms=(sum(d) / len(d) * 1000) if d else math.nan,
            min_ms=d[0] * 1000 if d else math.nan,
            max_ms=d[-1] * 1000 if d else math.nan,
            throughput_per_s=(len(d) / window) if window > 0 else math.nan,
            error_messages=list(self.error_messages),
        )


@dataclass(frozen=True)
class StepStats:
    """One step on one endpoint. ``throughput_per_s``: successful calls per second of the
    step's wall-clock window (first call started → last call ended)."""

    n: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput_per_s: float
    error_messages: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = None if math.isnan(v) else round(v, 3)
        return out


def ratio(value: float, baseline: float) -> float:
    """``value / baseline`` (NaN when either is missing or the baseline is 0)."""
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return math.nan
    return value / baseline
