"""Event-loop lag: how late a probe task wakes up, kept as a histogram for /metrics.

A probe sleeps ``interval`` seconds and notes how much later than asked it woke: the
time the loop was busy with other work (or the process was stopped). ``LagHistogram``
is pure (buckets, sum, count, the latest and the largest value); ``LoopLagMonitor`` is
the probe task. One probe every 0.5 s costs nothing anybody can measure.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LAG_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the lag histogram's buckets; +Inf is implied."""


@dataclass(frozen=True, slots=True)
class LagReading:
    """A copy of the histogram at one moment (what a scrape exposes)."""

    buckets: tuple[tuple[float, int], ...]  # (upper bound, cumulative count), +Inf last
    total: float  # sum of every lag observed, seconds
    count: int
    last: float  # the latest probe's lag, seconds


class LagHistogram:
    """Cumulative histogram of lags. Pure; ``observe`` is a bisect and two additions."""

    __slots__ = ("_counts", "bounds", "count", "last", "total")

    def __init__(self, bounds: Sequence[float] = LAG_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be increasing")
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.total = 0.0
        self.count = 0
        self.last = 0.0

    def observe(self, lag: float) -> None:
        lag = max(lag, 0.0)
        self._counts[bisect.bisect_left(self.bounds, lag)] += 1
        self.total += lag
        self.count += 1
        self.last = lag

    def reading(self) -> LagReading:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return LagReading(tuple(cumulative), self.total, self.count, self.last)


class LoopLagMonitor:
    """The probe task: every ``interval`` seconds, observe how late it woke."""

    def __init__(
        self,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        histogram: LagHistogram | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        self.interval = interval
        self.histogram = histogram or LagHistogram()
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def reading(self) -> LagReading:
        return self.histogram.reading()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._probe(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _probe(self) -> None:
        clock, interval, histogram = self._clock, self.interval, self.histogram
        while True:
            due = clock() + interval
            await asyncio.sleep(interval)
            histogram.observe(clock() - due)
