"""The pure tier logic: buckets across boundaries, gaps, late samples, merging minutes into
hours, the tier chosen for a range and the grid of points."""

from __future__ import annotations

import pytest

from cloudai.history.tiers import (
    HOUR,
    METRICS,
    MINUTE,
    Aggregate,
    Downsampler,
    Sample,
    TierAggregator,
    TierSpec,
    choose_tier,
    cutoffs,
    grid,
)
from cloudai.store.schema import HISTORY_METRICS

N = len(METRICS)


def values(cpu: float, gpu: float | None = None) -> tuple[float | None, ...]:
    out: list[float | None] = [None] * N
    out[0] = cpu
    out[3] = gpu
    return tuple(out)


def test_the_metrics_are_the_stored_columns() -> None:
    assert METRICS == HISTORY_METRICS


def test_a_minute_closes_when_a_sample_of_the_next_arrives() -> None:
    agg = TierAggregator(MINUTE, grace=10)
    assert agg.add("w1", 0.0, values(10)) == []
    assert agg.add("w1", 30.0, values(20)) == []
    assert agg.add("w1", 59.999, values(60)) == []
    closed = agg.add("w1", 60.0, values(1))  # the boundary belongs to the next bucket
    assert len(closed) == 1
    bucket = closed[0]
    assert (bucket.worker_id, bucket.t, bucket.samples) == ("w1", 0.0, 3)
    assert bucket.avg[0] == pytest.approx(30.0)
    assert (bucket.low[0], bucket.high[0]) == (10, 60)
    assert bucket.avg[3] is None and bucket.low[3] is None  # never sent: null
    assert agg.open_buckets() == 1


def test_workers_have_their_own_buckets() -> None:
    agg = TierAggregator(MINUTE, grace=10)
    agg.add("a", 5.0, values(1))
    agg.add("b", 5.0, values(3))
    closed = agg.add("a", 65.0, values(1))
    assert [(c.worker_id, c.avg[0]) for c in closed] == [("a", 1.0)]


def test_a_gap_closes_the_open_bucket_and_leaves_no_empty_ones() -> None:
    agg = TierAggregator(MINUTE, grace=10)
    agg.add("w", 10.0, values(5))
    closed = agg.add("w", 600.0, values(7))  # ten minutes of silence
    assert [c.t for c in closed] == [0.0]
    closed = agg.add("w", 661.0, values(7))
    assert [c.t for c in closed] == [600.0]


def test_a_silent_worker_s_bucket_closes_after_the_grace() -> None:
    agg = TierAggregator(MINUTE, grace=10)
    agg.add("w", 50.0, values(5))
    assert agg.close_due(69.0) == []
    closed = agg.close_due(70.0)
    assert [(c.t, c.samples) for c in closed] == [(0.0, 1)]
    assert agg.open_buckets() == 0
    # a straggler of the closed bucket cannot reopen it: counted, left out
    assert agg.add("w", 55.0, values(9)) == []
    assert agg.late == 1
    assert agg.open_buckets() == 0


def test_a_sample_older_than_the_open_bucket_is_late() -> None:
    agg = TierAggregator(MINUTE, grace=10)
    agg.add("w", 130.0, values(5))
    assert agg.add("w", 20.0, values(5)) == []
    assert agg.late == 1


def test_hours_are_merged_from_minutes_weighted_by_samples() -> None:
    down = Downsampler.create(grace=10)
    samples = [Sample("w", t, values(10.0 if t < 60 else 40.0)) for t in (0, 5, 10, 60)]
    minutes, hours = down.add(samples)
    assert [(m.t, m.samples, m.avg[0]) for m in minutes] == [(0.0, 3, 10.0)]
    assert hours == []
    minutes, hours = down.add([Sample("w", HOUR + 1, values(100.0))])
    assert [m.t for m in minutes] == [60.0]
    assert hours == []  # the hour closes when a minute of the next hour does
    minutes, hours = down.add([Sample("w", HOUR + 61, values(100.0))])
    assert [m.t for m in minutes] == [HOUR]
    assert len(hours) == 1
    hour = hours[0]
    assert (hour.t, hour.samples) == (0.0, 4)
    assert hour.avg[0] == pytest.approx((3 * 10 + 40) / 4)
    assert (hour.low[0], hour.high[0]) == (10.0, 40.0)


def test_close_all_emits_partial_buckets_of_every_tier() -> None:
    down = Downsampler.create()
    down.add([Sample("w", 3600.0 + 5, values(1)), Sample("w", 3600.0 + 65, values(3))])
    minutes, hours = down.close_all()
    assert [m.t for m in minutes] == [3660.0]
    assert [(h.t, h.samples, h.avg[0]) for h in hours] == [(3600.0, 2, 2.0)]


def test_a_seeded_bucket_goes_on_from_what_was_stored() -> None:
    agg = TierAggregator(MINUTE, grace=10)
    stored = Aggregate("w", 60.0, 2, values(10.0), values(5.0), values(15.0))
    agg.seed(stored)
    agg.add("w", 100.0, values(40.0))
    (closed,) = agg.add("w", 125.0, values(0.0))
    assert (closed.t, closed.samples) == (60.0, 3)
    assert closed.avg[0] == pytest.approx(20.0)
    assert (closed.low[0], closed.high[0]) == (5.0, 40.0)


TIERS = (
    TierSpec(0, 5.0, 86_400.0),
    TierSpec(1, MINUTE, 30 * 86_400.0),
    TierSpec(2, HOUR, 365 * 86_400.0),
)
NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("span", "points", "tier"),
    [
        (3600.0, 300, 0),  # 720 heartbeats <= 600? no, but tier 1's 60 < 150: tier 0
        (600.0, 300, 0),
        (6 * 3600.0, 300, 1),  # 360 minutes
        (86_400.0, 300, 1),  # 24 points of tier 2 are too few: tier 1, downsampled
        (7 * 86_400.0, 300, 2),  # 168 hours (tier 0 no longer reaches)
        (30 * 86_400.0, 300, 2),
        (86_400.0, 20, 2),
    ],
)
def test_the_tier_for_a_range(span: float, points: int, tier: int) -> None:
    assert choose_tier(TIERS, NOW - span, NOW, points, NOW) == tier


def test_a_tier_whose_retention_does_not_reach_is_not_chosen() -> None:
    start = NOW - 2 * 86_400.0  # tier 0 keeps a day
    assert choose_tier(TIERS, start, start + 600.0, 300, NOW) == 1
    way_back = NOW - 2 * 365 * 86_400.0  # nothing reaches: the longest retention
    assert choose_tier(TIERS, way_back, way_back + 600, 300, NOW) == 2


def test_the_grid_has_at_most_the_points_asked_for() -> None:
    assert grid(0, 3600, 300, 5.0) == (15.0, 240)
    assert grid(0, 86_400, 300, 60.0) == (300.0, 288)
    assert grid(0, 600, 300, 5.0) == (5.0, 120)
    assert grid(0, 7, 300, 5.0) == (5.0, 2)
    for span, points, res in [(3601, 300, 5.0), (86_399, 7, 60.0), (1, 1, 3600.0)]:
        step, count = grid(0, span, points, res)
        assert count <= points and count * step >= span and step % res == 0


def test_grid_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        grid(0, 10, 0, 5.0)


def test_retention_cutoffs() -> None:
    assert cutoffs((86_400.0, 30 * 86_400.0, 365 * 86_400.0), NOW) == [
        NOW - 86_400.0,
        NOW - 30 * 86_400.0,
        NOW - 365 * 86_400.0,
    ]
