from __future__ import annotations

import pytest

from cloudai.backoff import Backoff, full_jitter_delay


def test_full_jitter_spans_zero_to_the_exponential_ceiling() -> None:
    assert full_jitter_delay(0, 0.5, 30.0, rng=lambda: 0.0) == 0.0
    assert full_jitter_delay(0, 0.5, 30.0, rng=lambda: 1.0) == 0.5
    assert full_jitter_delay(3, 0.5, 30.0, rng=lambda: 1.0) == 4.0
    assert full_jitter_delay(3, 0.5, 30.0, rng=lambda: 0.5) == 2.0


def test_ceiling_is_capped_and_huge_attempts_do_not_overflow() -> None:
    assert full_jitter_delay(10, 0.5, 30.0, rng=lambda: 1.0) == 30.0
    assert full_jitter_delay(10_000, 0.5, 30.0, rng=lambda: 1.0) == 30.0


def test_floor_keeps_a_minimum_delay() -> None:
    assert full_jitter_delay(5, 0.5, 30.0, rng=lambda: 0.0, floor=0.1) == pytest.approx(0.1)
    # the floor never exceeds the ceiling
    assert full_jitter_delay(0, 0.5, 30.0, rng=lambda: 0.0, floor=2.0) == 0.5


def test_backoff_grows_per_attempt_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, rng=lambda: 1.0, floor=0.0)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.attempts == 6
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_backoff_delays_stay_within_bounds_with_a_real_rng() -> None:
    import random

    rng = random.Random(42)
    backoff = Backoff(initial=0.5, maximum=10.0, rng=rng.random)
    for attempt in range(50):
        ceiling = min(10.0, 0.5 * 2**attempt)
        assert backoff.floor <= backoff.next_delay() <= ceiling


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": 2, "maximum": 1}, {"factor": 0.5}])
def test_backoff_rejects_impossible_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
