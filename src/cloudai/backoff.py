"""Capped exponential back-off with full jitter. Pure; the RNG is injectable.

Delay number ``n`` (from 0) is uniform in ``[floor, min(maximum, initial * factor**n)]``
("full jitter": retries of many workers after a master restart spread over the whole
window instead of arriving together). ``floor`` keeps a retry loop from spinning.
Used by the worker (heartbeats, registration, results), the master (MasterRegister
retries, store writes) and the clients (reconnects).
"""

from __future__ import annotations

import random
from collections.abc import Callable

_MAX_EXPONENT = 64  # beyond this the cap always wins; avoids float overflow


def full_jitter_delay(
    attempt: int,
    initial: float,
    maximum: float,
    factor: float = 2.0,
    rng: Callable[[], float] = random.random,
    floor: float = 0.0,
) -> float:
    """The delay before retry ``attempt`` (0-based)."""
    ceiling = min(maximum, initial * factor ** min(max(attempt, 0), _MAX_EXPONENT))
    low = min(floor, ceiling)
    return low + rng() * (ceiling - low)


class Backoff:
    """Stateful helper: ``next_delay()`` grows per failure, ``reset()`` after a success."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        rng: Callable[[], float] = random.random,
        floor: float | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self.floor = initial / 10 if floor is None else floor
        self._rng = rng
        self.attempts = 0

    def next_delay(self) -> float:
        delay = full_jitter_delay(
            self.attempts, self.initial, self.maximum, self.factor, self._rng, self.floor
        )
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
