from __future__ import annotations

from cloudai.master.rate_meter import RateMeter


def test_rate_over_a_sliding_window() -> None:
    now = [0.0]
    meter = RateMeter(window=10.0, clock=lambda: now[0])
    assert meter.sample(0) == 0.0
    for second in range(1, 21):
        now[0] = float(second)
        meter.sample(second * 100)
    assert meter.rate == 100.0
    now[0] = 21.0
    meter.sample(2000)  # nothing new for a second: the window still holds ~10 s
    assert 85.0 < meter.rate < 100.0
