"""Capped exponential back-off with jitter. Pure; the RNG is injectable for tests."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays grow ``initial * factor**n`` up to ``maximum``; each is jittered to
    between half and all of that value ("equal jitter"), so retries never bunch up
    yet never retry immediately."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self._rng = rng
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self.attempts = 0
