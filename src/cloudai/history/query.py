"""A history query: its plan (tier, step, number of points) and its answer's JSON shape.
Pure: the rows come from the store, grouped by bucket (``Store.query_history``).

The answer is column-oriented::

    {"worker_id": "w1", "tier": 0, "resolution": 5.0, "from": ..., "to": ...,
     "t": [bucket starts...],
     "series": {"cpu_usage": {"avg": [...], "min": [...], "max": [...]}, ...}}

with null where a bucket has no data; the cluster's answer has no ``worker_id`` and a
``workers`` list (how many workers had data in each bucket).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloudai.history.tiers import METRICS, TierSpec, choose_tier, grid

DEFAULT_RANGE = 3600.0
DEFAULT_POINTS = 300
MAX_POINTS = 10_000
MAX_TIME = 1e11  # Unix seconds: the year 5138


class QueryError(ValueError):
    """A query that cannot be answered as asked (one line, for a 400)."""


@dataclass(frozen=True, slots=True)
class Plan:
    metrics: tuple[str, ...]
    start: float
    end: float
    tier: int
    step: float
    points: int


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``"cpu_usage,memory_usage"`` (spaces around names allowed) -> the names; None or
    empty: every metric."""
    if not text:
        return METRICS
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",")))
    unknown = [name or "''" for name in names if name not in METRICS]
    if unknown:
        raise QueryError(f"unknown metric {', '.join(unknown)}: choose from {', '.join(METRICS)}")
    return names


def plan(
    tiers: Sequence[TierSpec],
    now: float,
    metrics: str | None = None,
    start: float | None = None,
    end: float | None = None,
    points: int | None = None,
) -> Plan:
    """Resolve the defaults (the last hour, every metric, 300 points), check the values
    and choose the tier and the step. ``start`` at or after ``end``: no points."""
    names = parse_metrics(metrics)
    end = now if end is None else end
    start = max(0.0, end - DEFAULT_RANGE) if start is None else start
    points = DEFAULT_POINTS if points is None else points
    if not all(math.isfinite(v) and 0 <= v <= MAX_TIME for v in (start, end)):
        raise QueryError(f"from and to are Unix seconds, 0..{MAX_TIME:g}")
    if not 1 <= points <= MAX_POINTS:
        raise QueryError(f"points must be 1..{MAX_POINTS}, got {points}")
    if start >= end:
        return Plan(names, start, end, tiers[0].tier, tiers[0].resolution, 0)
    tier = choose_tier(tiers, start, end, points, now)
    resolution = next(spec.resolution for spec in tiers if spec.tier == tier)
    step, count = grid(start, end, points, resolution)
    return Plan(names, start, end, tier, step, count)


def answer(p: Plan, rows: Sequence[Sequence[Any]], worker_id: str | None = None) -> dict[str, Any]:
    """The JSON answer from the store's rows ``(k, workers, avg, min, max, ...)``."""
    count = p.points
    columns: list[list[Any]] = [[None] * count for _ in range(3 * len(p.metrics))]
    workers = [0] * count
    for row in rows:
        k = int(row[0])
        if not 0 <= k < count:
            continue
        workers[k] = int(row[1])
        for i, value in enumerate(row[2:]):
            columns[i][k] = None if value is None else float(value)
    series = {
        name: {"avg": columns[3 * i], "min": columns[3 * i + 1], "max": columns[3 * i + 2]}
        for i, name in enumerate(p.metrics)
    }
    out: dict[str, Any] = {}
    if worker_id is not None:
        out["worker_id"] = worker_id
    out.update(
        {
            "tier": p.tier,
            "resolution": p.step,
            "from": p.start,
            "to": p.end,
            "t": [p.start + k * p.step for k in range(count)],
            "series": series,
        }
    )
    if worker_id is None:
        out["workers"] = workers
    return out
