"""RateMeter: events per second from a growing counter (the heartbeat ingest rate). Pure."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateMeter:
    """Events per second over a sliding window, from a monotonically growing counter."""

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self.rate = 0.0

    def sample(self, count: int) -> float:
        now = self._clock()
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        first_time, first_count = samples[0]
        elapsed = now - first_time
        self.rate = (count - first_count) / elapsed if elapsed > 0 else 0.0
        return self.rate
