from __future__ import annotations

import pytest

from cloudai.worker.rates import RateMeter, counter_rates


def test_rates_are_the_counter_deltas_per_second() -> None:
    before = {"eth0": (1_000, 500), "eth1": (0, 0)}
    after = {"eth0": (3_000, 1_500), "eth1": (400, 100)}
    assert counter_rates(before, after, 2.0, 2) == (1_200.0, 550.0)


def test_a_counter_that_went_backwards_adds_nothing() -> None:
    # eth0 was re-created (its counters restarted), eth1 wrapped: no negative rate.
    before = {"eth0": (10_000, 10_000), "eth1": (2**64 - 10, 50)}
    after = {"eth0": (100, 20_000), "eth1": (5, 150)}
    assert counter_rates(before, after, 1.0, 2) == (0.0, 10_100.0)


def test_sources_that_appear_or_vanish_add_nothing() -> None:
    before = {"eth0": (0, 0), "veth-gone": (10**9, 10**9)}
    after = {"eth0": (10, 20), "veth-new": (10**9, 10**9)}
    assert counter_rates(before, after, 1.0, 2) == (10.0, 20.0)


def test_malformed_readings_are_skipped() -> None:
    assert counter_rates({"a": (1,)}, {"a": (5, 5)}, 1.0, 2) == (0.0, 0.0)


@pytest.mark.parametrize("elapsed", [0.0, -1.0, float("nan")])
def test_no_rate_without_time_passing(elapsed: float) -> None:
    assert counter_rates({"a": (0, 0)}, {"a": (1, 1)}, elapsed, 2) is None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_meter_gives_no_rate_before_the_second_reading() -> None:
    clock = Clock()
    meter = RateMeter(2, clock)
    assert meter.update({"all": (0, 0)}) is None
    clock.now += 5.0
    assert meter.update({"all": (5_000, 10_000)}) == (1_000.0, 2_000.0)
    clock.now += 5.0
    assert meter.update({"all": (5_000, 10_000)}) == (0.0, 0.0)  # idle: a known zero


def test_meter_restarts_after_a_failed_read() -> None:
    clock = Clock()
    meter = RateMeter(2, clock)
    meter.update({"all": (0, 0)})
    clock.now += 1.0
    assert meter.update(None) is None  # unreadable this time
    clock.now += 1.0
    assert meter.update({"all": (100, 100)}) is None  # no rate across the gap
    clock.now += 1.0
    assert meter.update({"all": (300, 100)}) == (200.0, 0.0)


def test_meter_never_reports_a_negative_rate_on_reset() -> None:
    clock = Clock()
    meter = RateMeter(2, clock)
    meter.update({"all": (10**12, 10**12)})
    clock.now += 1.0
    rates = meter.update({"all": (10, 10)})  # counters reset (a device replaced)
    assert rates == (0.0, 0.0)
