from __future__ import annotations

import math
import random

import pytest

from cloudai.bench.histogram import PRECISION, Histogram, bucket_of, bucket_upper


def exact_percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def test_empty_histogram_has_no_percentiles() -> None:
    h = Histogram()
    assert h.percentile(50) is None
    assert h.mean is None
    assert h.summary() == {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}


@pytest.mark.parametrize("p", [1, 50, 90, 99, 99.9])
def test_percentiles_within_one_bucket_of_exact(p: float) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(0, 1.5) for _ in range(20_000)]
    h = Histogram()
    for value in values:
        h.record(value)
    exact = exact_percentile(values, p)
    got = h.percentile(p)
    assert got is not None
    # Never below the true value; at most one bucket (1 %) above it.
    assert exact <= got <= exact * (1 + PRECISION) + 1e-12


def test_min_max_and_clamping() -> None:
    h = Histogram()
    for value in (5.0, 5.0, 5.0):
        h.record(value)
    assert h.percentile(50) == 5.0  # clamped to the observed max, not the bucket bound
    assert h.percentile(0) == 5.0 and h.percentile(100) == 5.0
    h.record(-1.0)  # guarded: recorded as 0
    assert h.minimum == 0.0 and h.maximum == 5.0 and h.count == 4


def test_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(3)
    a, b, both = Histogram(), Histogram(), Histogram()
    for i in range(5000):
        value = rng.expovariate(0.5)
        (a if i % 2 else b).record(value)
        both.record(value)
    merged = a.merge(b)
    assert merged.count == both.count
    assert merged.counts == both.counts
    assert merged.maximum == both.maximum and merged.minimum == both.minimum
    for p in (50, 99):
        assert merged.percentile(p) == both.percentile(p)


def test_bucket_bounds_are_monotonic_and_contain_values() -> None:
    for value in (0.0005, 0.001, 0.0101, 0.5, 1.0, 3.3, 250.0, 60_000.0):
        index = bucket_of(value)
        assert value <= bucket_upper(index) * (1 + 1e-9)
        if index > 0:
            assert value > bucket_upper(index - 1) * (1 - 1e-9)
