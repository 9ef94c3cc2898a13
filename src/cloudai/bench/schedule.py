"""Open-loop scheduling, worker partitioning and heartbeat tags. Pure.

Open loop: heartbeat ``k`` of a generator is due at ``start + k / rate`` whatever the
server does, so a slow server shows up as latency (and in-flight calls), never as a
lower offered rate.

Tags: every heartbeat carries a unique tag ``k * generators + g + 1`` (``g`` the
generator, ``k`` its sequence number; 0 means "no tag"). The tag travels in
``cpu_usage`` as ``tag / 2**20`` (exact in a double and in the shortest JSON repr), so a
WebSocket client can tell which heartbeat a frame carries and look up its send time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TAG_SCALE = 2**20
MAX_TAG = 100 * TAG_SCALE  # cpu_usage must stay within 0..100


def tag_to_cpu(tag: int) -> float:
    if not 0 <= tag <= MAX_TAG:
        raise ValueError(f"tag {tag} out of range")
    return tag / TAG_SCALE


def cpu_to_tag(cpu_usage: float) -> int:
    return round(cpu_usage * TAG_SCALE)


@dataclass(frozen=True, slots=True)
class OpenLoopSchedule:
    """``rate`` events per second from ``start`` (monotonic seconds) until ``end``."""

    rate: float
    start: float
    end: float

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be > 0")

    def time_of(self, k: int) -> float:
        return self.start + k / self.rate

    @property
    def total(self) -> int:
        """Events scheduled in ``[start, end)``."""
        return max(0, math.ceil((self.end - self.start) * self.rate - 1e-9))

    def due(self, now: float) -> int:
        """How many events are due at ``now`` (events 0..due-1), capped at ``total``."""
        if now < self.start:
            return 0
        return min(self.total, math.floor((now - self.start) * self.rate) + 1)


@dataclass(frozen=True, slots=True)
class Layout:
    """Which generator owns which worker, and what a tag means.

    Generator ``g`` owns workers ``g, g + G, g + 2G, ...`` and sends to them round-robin
    at ``rate * owned / workers``, so every worker gets the same share of the load.
    """

    workers: int
    generators: int

    def __post_init__(self) -> None:
        if self.workers < 1 or self.generators < 1:
            raise ValueError("workers and generators must be >= 1")
        if self.generators > self.workers:
            raise ValueError("more generators than workers")

    def owned(self, g: int) -> range:
        return range(g, self.workers, self.generators)

    def rate_of(self, g: int, total_rate: float) -> float:
        return total_rate * len(self.owned(g)) / self.workers

    def tag(self, g: int, k: int) -> int:
        return k * self.generators + g + 1

    def split(self, tag: int) -> tuple[int, int]:
        """(generator, sequence number) of a tag."""
        g = (tag - 1) % self.generators
        return g, (tag - 1) // self.generators

    def worker_of(self, tag: int) -> int:
        g, k = self.split(tag)
        owned = self.owned(g)
        return owned[k % len(owned)]

    def next_tag(self, tag: int) -> int:
        """The tag of the same worker's next heartbeat."""
        g, _ = self.split(tag)
        return tag + len(self.owned(g)) * self.generators

    def capacity(self, total_rate: float, duration: float) -> int:
        """Array size that holds every tag of a run (index = tag)."""
        most = max(
            OpenLoopSchedule(self.rate_of(g, total_rate), 0.0, duration).total
            for g in range(self.generators)
        )
        return (most + 1) * self.generators + 1


def worker_ids(count: int, prefix: str = "bench-") -> list[str]:
    width = max(5, len(str(count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]
