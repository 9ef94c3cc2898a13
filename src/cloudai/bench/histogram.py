"""A latency histogram: log-spaced buckets (~1 % relative precision), mergeable. Pure.

Values are recorded in milliseconds. Percentiles are nearest-rank over buckets and
return the bucket's upper bound, clamped to the exact observed minimum and maximum, so
a reported p99 is never below the true p99 by more than the bucket width (1 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PRECISION = 0.01  # relative width of a bucket
_LOG_BASE = math.log1p(PRECISION)
_FLOOR_MS = 0.001  # values below 1 us share the first bucket


def bucket_of(value_ms: float) -> int:
    if value_ms <= _FLOOR_MS:
        return 0
    return int(math.log(value_ms / _FLOOR_MS) / _LOG_BASE) + 1


def bucket_upper(index: int) -> float:
    """The largest value that falls into bucket ``index``."""
    if index <= 0:
        return _FLOOR_MS
    return _FLOOR_MS * math.exp(index * _LOG_BASE)


@dataclass(slots=True)
class Histogram:
    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = 0.0

    def record(self, value_ms: float) -> None:
        if value_ms < 0.0:
            value_ms = 0.0  # clocks are monotonic; guard against rounding only
        index = bucket_of(value_ms)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        self.count += 1
        self.total += value_ms
        if value_ms > self.maximum:
            self.maximum = value_ms
        if value_ms < self.minimum:
            self.minimum = value_ms

    def merge(self, other: Histogram) -> Histogram:
        counts = self.counts
        for index, n in other.counts.items():
            counts[index] = counts.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)
        self.minimum = min(self.minimum, other.minimum)
        return self

    def percentile(self, p: float) -> float | None:
        """The value at percentile ``p`` (0..100), or None when empty."""
        if not self.count:
            return None
        if p <= 0:
            return self.minimum
        if p >= 100:
            return self.maximum
        rank = math.ceil(p / 100.0 * self.count)
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(max(bucket_upper(index), self.minimum), self.maximum)
        return self.maximum  # pragma: no cover - counts always sum to count

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def summary(self, percentiles: tuple[float, ...] = (50, 90, 99)) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for p in percentiles:
            value = self.percentile(p)
            out[f"p{p:g}"] = None if value is None else round(value, 3)
        out["max"] = round(self.maximum, 3) if self.count else None
        out["mean"] = None if self.mean is None else round(self.mean, 3)
        return out
