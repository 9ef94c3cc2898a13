"""FailureLimiter and LogOnce on a hand-driven clock (cloudai.security.limiter)."""

from __future__ import annotations

import pytest

from cloudai.security.limiter import FailureLimiter, LogOnce


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_peer_is_blocked_after_max_failures_in_the_window(clock: Clock) -> None:
    limiter = FailureLimiter(max_failures=3, window=60, clock=clock)
    for _ in range(2):
        limiter.failed("a")
        clock.now += 10
    assert limiter.blocked("a") == 0
    limiter.failed("a")  # third failure at t=20: blocked until the first leaves (t=60)
    assert limiter.blocked("a") == pytest.approx(40)
    assert limiter.blocked("b") == 0  # others are not
    clock.now += 39.5
    assert limiter.blocked("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.blocked("a") == 0
    limiter.failed("a")  # the window slides: failures at 10, 20, 60 -> blocked until 70
    assert limiter.blocked("a") == pytest.approx(10)


def test_failures_spread_out_never_block(clock: Clock) -> None:
    limiter = FailureLimiter(max_failures=3, window=60, clock=clock)
    for _ in range(20):
        limiter.failed("a")
        assert limiter.blocked("a") == 0
        clock.now += 31


def test_success_forgets_the_failures(clock: Clock) -> None:
    limiter = FailureLimiter(max_failures=2, window=60, clock=clock)
    limiter.failed("a")
    limiter.failed("a")
    assert limiter.blocked("a") > 0
    limiter.succeeded("a")
    assert limiter.blocked("a") == 0
    assert len(limiter) == 0
    limiter.succeeded("never-seen")


def test_old_peers_are_forgotten(clock: Clock) -> None:
    limiter = FailureLimiter(max_failures=5, window=60, clock=clock)
    for i in range(100):
        limiter.failed(f"peer-{i}")
    assert len(limiter) == 100
    clock.now += 61
    limiter.failed("late")
    assert len(limiter) == 1


def test_the_number_of_peers_is_capped(clock: Clock) -> None:
    limiter = FailureLimiter(max_failures=1, window=60, clock=clock, max_peers=10)
    for i in range(25):
        limiter.failed(f"peer-{i}")
        clock.now += 0.001
    assert len(limiter) == 10
    assert limiter.blocked("peer-24") > 0  # the most recent are kept
    assert limiter.blocked("peer-0") == 0  # the oldest were forgotten


def test_memory_per_peer_is_bounded(clock: Clock) -> None:
    limiter = FailureLimiter(max_failures=3, window=60, clock=clock)
    for _ in range(1000):
        limiter.failed("a")
    assert len(limiter._failures["a"]) == 3


@pytest.mark.parametrize(
    "kw",
    [{"max_failures": 0}, {"window": 0}, {"max_peers": 0}],
    ids=["failures", "window", "peers"],
)
def test_limiter_settings_are_checked(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FailureLimiter(**kw)  # type: ignore[arg-type]


def test_log_once_per_peer_per_interval(clock: Clock) -> None:
    gate = LogOnce(interval=60, clock=clock)
    assert gate.allow("a") == 0
    assert gate.allow("b") == 0
    for _ in range(4):
        clock.now += 10
        assert gate.allow("a") is None
    assert gate.suppressed_total == 4
    clock.now += 20  # 60 s after a's line: log again, saying 4 were left out
    assert gate.allow("a") == 4
    assert gate.allow("a") is None
    clock.now += 60
    assert gate.allow("a") == 1
    assert gate.suppressed_total == 5


def test_log_once_forgets_quiet_peers_and_caps_its_memory(clock: Clock) -> None:
    gate = LogOnce(interval=60, clock=clock, max_peers=5)
    for i in range(8):
        assert gate.allow(f"peer-{i}") == 0
    assert len(gate) == 5
    assert gate.allow("peer-0") == 0  # forgotten: logged again
    clock.now += 61
    gate.allow("new")
    assert len(gate) == 1


def test_log_once_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        LogOnce(interval=0)
    with pytest.raises(ValueError):
        LogOnce(max_peers=0)
