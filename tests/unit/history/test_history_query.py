"""A history query's plan (defaults, checks, tier, step) and its answer's JSON shape: the
contract the dashboard reads."""

from __future__ import annotations

import pytest

from cloudai.api.models import ClusterHistory, WorkerHistory
from cloudai.history.query import QueryError, answer, parse_metrics, plan
from cloudai.history.tiers import HOUR, METRICS, MINUTE, TierSpec

TIERS = (TierSpec(0, 5.0, 86_400.0), TierSpec(1, MINUTE, 2_592_000.0), TierSpec(2, HOUR, 3e7))
NOW = 1_700_003_600.0


def test_defaults_are_the_last_hour_every_metric_300_points() -> None:
    p = plan(TIERS, NOW)
    assert (p.start, p.end) == (NOW - 3600, NOW)
    assert p.metrics == METRICS
    assert p.tier == 0
    assert p.points <= 300 and p.step == 15.0


def test_metrics_are_checked_and_deduplicated() -> None:
    assert parse_metrics("cpu_usage, memory_usage,cpu_usage") == ("cpu_usage", "memory_usage")
    with pytest.raises(QueryError, match="unknown metric bogus"):
        parse_metrics("cpu_usage,bogus")
    with pytest.raises(QueryError, match="unknown metric ''"):
        parse_metrics("cpu_usage,,")
    assert parse_metrics("") == METRICS


def test_an_empty_range_has_no_points() -> None:
    p = plan(TIERS, NOW, "cpu_usage", 20.0, 10.0, 300)
    assert p.points == 0
    body = answer(p, [], "w1")
    assert body["t"] == [] and body["series"]["cpu_usage"] == {"avg": [], "min": [], "max": []}
    early = plan(TIERS, 0.0, None, None, 0.0, None)  # "to" 0: "from" is not before 0
    assert (early.start, early.end, early.points) == (0.0, 0.0, 0)


@pytest.mark.parametrize(
    ("start", "end", "points", "problem"),
    [
        (0.0, 10.0, 0, "points"),
        (0.0, 10.0, 10_001, "points"),
        (float("nan"), 10.0, 5, "Unix seconds"),
        (-1e308, 1e308, 5, "Unix seconds"),
    ],
)
def test_bad_queries(start: float, end: float, points: int, problem: str) -> None:
    with pytest.raises(QueryError, match=problem):
        plan(TIERS, NOW, None, start, end, points)


def test_the_worker_answer_is_column_oriented_with_nulls() -> None:
    p = plan(TIERS, NOW, "cpu_usage,gpu_usage", NOW - 60, NOW, 4)
    assert (p.tier, p.step, p.points) == (0, 15.0, 4)
    rows = [(0, 1, 10.0, 5.0, 15.0, None, None, None), (2, 1, 30.0, 30.0, 30.0, 1.0, 1.0, 1.0)]
    body = answer(p, rows, "w1")
    assert list(body) == ["worker_id", "tier", "resolution", "from", "to", "t", "series"]
    assert body["worker_id"] == "w1"
    assert body["t"] == [NOW - 60, NOW - 45, NOW - 30, NOW - 15]
    assert body["series"]["cpu_usage"] == {
        "avg": [10.0, None, 30.0, None],
        "min": [5.0, None, 30.0, None],
        "max": [15.0, None, 30.0, None],
    }
    assert body["series"]["gpu_usage"]["avg"] == [None, None, 1.0, None]
    WorkerHistory.model_validate(body)  # the documented model reads it


def test_the_cluster_answer_counts_workers_per_point() -> None:
    p = plan(TIERS, NOW, "cpu_usage", NOW - 60, NOW, 4)
    body = answer(p, [(1, 3, 10.0, 1.0, 50.0)], None)
    assert "worker_id" not in body
    assert body["workers"] == [0, 3, 0, 0]
    assert body["series"]["cpu_usage"]["max"] == [None, 50.0, None, None]
    model = ClusterHistory.model_validate(body)
    assert model.model_dump(mode="json", by_alias=True) == body
