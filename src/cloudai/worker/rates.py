"""Rates (units per second) from cumulative counters. Pure: counters in, rates out.

The kernel counts network and disk bytes since boot; a rate is the difference between
two readings divided by the time between them. A reading is a mapping from a source (a
network interface, ``"all"`` disks) to its counters, all of the same width (for example
``(rx_bytes, tx_bytes)``). Between two readings:

- only sources present in both count: an interface that appeared or went away (a
  container's virtual interface) adds nothing rather than a jump;
- a counter that went backwards (the source was reset or re-created, a wrap the
  operating system did not hide) adds nothing for that interval: a rate is never
  negative;
- no rate before the second reading, nor when the clock did not move forward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Counters = Mapping[str, Sequence[int]]


def counter_rates(
    previous: Counters, current: Counters, elapsed: float, width: int
) -> tuple[float, ...] | None:
    """Per-second rates of ``width`` counters summed over the sources in both readings;
    None when ``elapsed`` is not a positive time."""
    if not elapsed > 0.0:
        return None
    totals = [0] * width
    for source, now in current.items():
        before = previous.get(source)
        if before is None or len(before) != width or len(now) != width:
            continue
        for i in range(width):
            delta = now[i] - before[i]
            if delta > 0:
                totals[i] += delta
    return tuple(total / elapsed for total in totals)


@dataclass(slots=True)
class _Reading:
    at: float
    counters: dict[str, tuple[int, ...]]


class RateMeter:
    """Keeps the previous reading; ``update`` gives the rates since it (None the first
    time, or when ``read`` gave nothing)."""

    def __init__(self, width: int, clock: Callable[[], float]) -> None:
        self.width = width
        self._clock = clock
        self._last: _Reading | None = None

    def update(self, counters: Counters | None) -> tuple[float, ...] | None:
        """Record a reading (None: the counters could not be read) and return the rates
        since the previous one."""
        if counters is None:
            self._last = None
            return None
        reading = _Reading(self._clock(), {k: tuple(v) for k, v in counters.items()})
        previous, self._last = self._last, reading
        if previous is None:
            return None
        return counter_rates(
            previous.counters, reading.counters, reading.at - previous.at, self.width
        )
