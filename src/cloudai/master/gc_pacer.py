"""``GcPacer``: the master runs Python's cyclic garbage collector on its own schedule.

Why (measured at 10,000 streaming workers, see docs/PERFORMANCE.md): CPython decides
when to collect the young generation from *allocations minus deallocations* of tracked
objects. In the master's steady state each heartbeat allocates the worker's new state
(young) and frees its previous one (old), so that count stays near zero while the young
list grows to hundreds of thousands of objects; the next burst of allocations (the
store's flush, a registration) then triggers a "young" collection that walks all of
them: 130-170 ms measured, with the event loop stopped. And every streaming worker
keeps ~30 objects that live until its next heartbeat (the pending read of its stream,
its newest state): at 10,000 workers any collection of the older generations walks
~300,000 of them, 150-450 ms.

What the pacer does instead, from the event loop, with the automatic collector off:

- every ``young_interval`` (100 ms) it collects generation 0 only: what was allocated
  since and is still alive, a few thousand objects, a millisecond or two. Objects that
  die sooner are never walked, so a longer interval costs less (at 20,000 heartbeats/s:
  20 ms intervals took ~13 % of the event loop, and moved the knee below 20,000/s).
  Survivors move on and are freed by reference counting when replaced; the hot path
  makes no reference cycles (measured: nothing to collect in steady state);
- every ``full_interval`` (5 min) it runs a full collection of what is not frozen and
  then freezes (``gc.freeze``) what survived: connections, streams and the registry
  leave the collector's reach, so later full collections walk only what is new;
- every ``refresh_interval`` (1 h) it unfreezes, collects everything (this reclaims
  reference cycles among frozen objects, e.g. of workers gone since) and freezes again.
Long pauses are thus rare by design: one of ~150-450 ms at 10,000 workers every five
minutes delays ~0.05 % of heartbeats, where CPython's own schedule stalled the loop
several times a minute.

``stop`` restores the collector as it found it. The schedule (``next_collection``) is
pure and tested with a fake collector; the ``gc`` module is the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


class Collector(Protocol):
    """What the pacer needs of the garbage collector (the ``gc`` module has it)."""

    def collect(self, generation: int = 2) -> int: ...
    def freeze(self) -> None: ...
    def unfreeze(self) -> None: ...
    def disable(self) -> None: ...
    def enable(self) -> None: ...
    def isenabled(self) -> bool: ...


class Collection(enum.Enum):
    YOUNG = "young"  # generation 0
    FULL = "full"  # everything not frozen, then freeze
    REFRESH = "refresh"  # unfreeze, everything, freeze


@dataclass(slots=True)
class CollectionStats:
    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0

    def add(self, ms: float) -> None:
        self.count += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)


@dataclass(slots=True)
class GcSchedule:
    """When each kind of collection is due. Pure: the caller passes the time."""

    full_interval: float
    refresh_interval: float
    started: float
    last_full: float = field(init=False)
    last_refresh: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.full_interval <= self.refresh_interval:
            raise ValueError("need 0 < full_interval <= refresh_interval")
        self.last_full = self.last_refresh = self.started

    def next_collection(self, now: float) -> Collection:
        """The collection to run at this tick (one per tick)."""
        if now - self.last_refresh >= self.refresh_interval:
            self.last_refresh = self.last_full = now
            return Collection.REFRESH
        if now - self.last_full >= self.full_interval:
            self.last_full = now
            return Collection.FULL
        return Collection.YOUNG


class GcPacer:
    def __init__(
        self,
        young_interval: float = 0.1,
        full_interval: float = 300.0,
        refresh_interval: float = 3600.0,
        *,
        collector: Collector = gc,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not young_interval > 0:
            raise ValueError(f"young_interval must be > 0, got {young_interval!r}")
        self.young_interval = young_interval
        self._collector = collector
        self._clock = clock
        self._schedule = GcSchedule(full_interval, refresh_interval, clock())
        self._was_enabled: bool | None = None
        self._task: asyncio.Task[None] | None = None
        self.stats = {kind: CollectionStats() for kind in Collection}

    @property
    def running(self) -> bool:
        return self._was_enabled is not None

    def start(self) -> None:
        """Freeze what start-up allocated, turn the automatic collector off, pace it."""
        if self.running:
            raise RuntimeError("the GC pacer is running already")
        collector = self._collector
        self._was_enabled = collector.isenabled()
        collector.disable()
        collector.collect(2)
        collector.freeze()
        self._schedule = GcSchedule(
            self._schedule.full_interval, self._schedule.refresh_interval, self._clock()
        )
        with contextlib.suppress(RuntimeError):  # no running loop: ticks are the caller's
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-pacer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._was_enabled is None:
            return
        self._collector.unfreeze()
        if self._was_enabled:
            self._collector.enable()
        self._was_enabled = None

    def tick(self) -> Collection:
        """Run the collection that is due now; return which one."""
        kind = self._schedule.next_collection(self._clock())
        collector = self._collector
        began = time.perf_counter()
        if kind is Collection.YOUNG:
            collector.collect(0)
        else:
            if kind is Collection.REFRESH:
                collector.unfreeze()
            collector.collect(2)
            collector.freeze()
        ms = (time.perf_counter() - began) * 1000.0
        self.stats[kind].add(ms)
        if kind is not Collection.YOUNG and ms >= 50.0:
            log.info("garbage collection (%s) took %.0f ms", kind.value, ms)
        return kind

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.young_interval)
            self.tick()
