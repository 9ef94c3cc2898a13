"""``HistoryRecorder``: the master's telemetry history (docs/HISTORY.md).

A telemetry subscriber appends each heartbeat's figures to a bounded buffer (O(1), no
I/O, nothing awaited: a heartbeat never waits for history; when the store falls behind
the oldest samples are dropped and counted). A writer task, every ``flush_interval``,
takes the buffer in a thread, feeds the incremental minute and hour buckets
(``tiers.Downsampler``) and writes the samples and the buckets that closed in ONE
transaction (executemany per tier). Every ``prune_interval`` the rows past each tier's
retention are deleted.

Restarts: at stop the open buckets are written, partial; at start the buckets of the
current minute and hour are rebuilt from what the store holds (tier 0 rows of the
minute, tier 1 rows of the hour) and replaced when they close. A crash loses the
samples not yet written (at most about ``flush_interval``); the tiers stay consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cloudai.history.query import Plan, answer, plan
from cloudai.history.tiers import (
    HOUR,
    METRICS,
    MINUTE,
    Aggregate,
    Downsampler,
    Sample,
    TierSpec,
    Values,
    cutoffs,
)
from cloudai.store import Store
from cloudai.telemetry.manager import TelemetryEvent, TelemetryManager, subscribes_to
from cloudai.telemetry.model import WorkerTelemetry

log = logging.getLogger(__name__)

_BASIC = ("cpu_usage", "memory_usage", "storage_usage", "gpu_usage")
_RESOURCE = METRICS[5:]  # the figures of WorkerTelemetry.resources, by the same names


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    retentions: tuple[float, float, float] = (86_400.0, 30 * 86_400.0, 365 * 86_400.0)
    flush_interval: float = 1.0
    prune_interval: float = 60.0
    buffer_size: int = 200_000
    resolution: float = 5.0  # tier 0's step: the workers' heartbeat interval
    grace: float = 10.0  # a bucket closes this long after its end without a later sample

    def tiers(self) -> tuple[TierSpec, ...]:
        return (
            TierSpec(0, self.resolution, self.retentions[0]),
            TierSpec(1, MINUTE, self.retentions[1]),
            TierSpec(2, HOUR, self.retentions[2]),
        )


@dataclass(slots=True)
class HistoryStats:
    samples: int = 0  # heartbeats taken into the buffer
    dropped: int = 0  # the oldest samples dropped because the store fell behind
    written: int = 0  # tier 0 rows written
    buckets: int = 0  # tier 1 and 2 rows written
    batches: int = 0
    failed_batches: int = 0
    pruned: int = 0
    recovered: int = 0  # buckets rebuilt from the store at start
    writer_restarts: int = 0  # history_writer = "process": writer processes started again


def sample_values(state: WorkerTelemetry) -> Values:
    """A heartbeat's figures in ``METRICS`` order (None: not sent)."""
    resources = state.resources
    values: list[float | None] = [
        state.cpu_usage,
        state.memory_usage,
        state.storage_usage,
        state.gpu_usage,
        float(len(state.running_tasks)),
    ]
    if resources is None:
        values += [None] * len(_RESOURCE)
    else:
        for name in _RESOURCE:
            value = getattr(resources, name, None)
            values.append(None if value is None else float(value))
    return tuple(values)


def raw_row(sample: Sample) -> tuple[Any, ...]:
    """A tier 0 row in the store's column order."""
    return (sample.worker_id, sample.t, *sample.values)


def bucket_row(agg: Aggregate) -> tuple[Any, ...]:
    """A tier 1 or 2 row in the store's column order: per metric avg, min, max."""
    row: list[Any] = [agg.worker_id, agg.t, agg.samples]
    for avg, low, high in zip(agg.avg, agg.low, agg.high, strict=True):
        row += (avg, low, high)
    return tuple(row)


def aggregate_from_row(row: dict[str, Any]) -> Aggregate:
    def figure(name: str) -> float | None:
        value = row.get(name)
        return None if value is None else float(value)

    return Aggregate(
        str(row["worker_id"]),
        float(row["t"]),
        int(row["samples"] or 0),
        tuple(figure(name) for name in METRICS),
        tuple(figure(f"{name}_min") for name in METRICS),
        tuple(figure(f"{name}_max") for name in METRICS),
    )


class HistoryRecorder:
    def __init__(
        self,
        store: Store,
        config: HistoryConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config or HistoryConfig()
        self.stats = HistoryStats()
        self._clock = clock
        self._buffer: deque[Sample] = deque(maxlen=self.config.buffer_size)
        self._last_t: dict[str, float] = {}
        self._downsampler = Downsampler.create(self.config.grace)
        self._pending_minutes: list[Aggregate] = []  # closed, not yet written
        self._pending_hours: list[Aggregate] = []
        self._lock = threading.Lock()  # one flush at a time (the final one included)
        self._last_prune = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def late(self) -> int:
        return self._downsampler.minute.late + self._downsampler.hour.late

    # -- the heartbeat path ----------------------------------------------------------------

    @subscribes_to(TelemetryEvent.UPDATE, TelemetryEvent.ACTIVE)
    def on_telemetry(self, state: WorkerTelemetry, event: TelemetryEvent) -> None:
        """O(1): one tuple into the buffer. Only heartbeats count (a registration is
        published as an update too, with no figures)."""
        if state.state != "active":
            return
        worker_id, t = state.worker_id, state.last_update
        if self._last_t.get(worker_id) == t:
            return  # the same heartbeat published again (e.g. a came-back event)
        self._last_t[worker_id] = t
        buffer = self._buffer
        if len(buffer) == buffer.maxlen:
            self.stats.dropped += 1  # the deque drops its oldest
        buffer.append(Sample(worker_id, t, sample_values(state)))
        self.stats.samples += 1

    def take(self, samples: Iterable[Sample]) -> None:
        """Samples taken elsewhere (the master's side of ``HistoryProcess``), into the
        buffer with the same bound."""
        buffer = self._buffer
        for sample in samples:
            if len(buffer) == buffer.maxlen:
                self.stats.dropped += 1
            buffer.append(sample)

    def current_stats(self) -> HistoryStats:
        """The counters now (a copy)."""
        return replace(self.stats)

    def attach(self, telemetry: TelemetryManager) -> None:
        self._unsubscribe = telemetry.subscribe(self.on_telemetry)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the open buckets from the store, then write every flush interval."""
        await asyncio.to_thread(self.recover, self._clock())
        self._task = asyncio.get_running_loop().create_task(self._run(), name="history-writer")

    async def _detach(self) -> None:
        """Take no more heartbeats and stop the periodic task (the first step of stop)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        """Stop writing; write what is buffered and the open buckets (partial)."""
        await self._detach()
        ok = await asyncio.to_thread(self.flush_now, self._clock(), True)
        if not ok:
            log.warning(
                "history: %d samples and %d buckets were not written at stop",
                len(self._buffer),
                len(self._pending_minutes) + len(self._pending_hours),
            )

    async def _run(self) -> None:
        interval = self.config.flush_interval
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.flush_now, self._clock())

    async def flush(self) -> bool:
        return await asyncio.to_thread(self.flush_now, self._clock())

    # -- the writer's thread -----------------------------------------------------------------

    def recover(self, now: float) -> int:
        """Reopen the current minute's and hour's buckets from the store."""
        minute_start = math.floor(now / MINUTE) * MINUTE
        hour_start = math.floor(now / HOUR) * HOUR
        try:
            minutes, hours = self.store.recover_history(minute_start, hour_start)
        except Exception as exc:  # the master runs without the open buckets
            log.warning("history: cannot rebuild the open buckets: %s", exc)
            return 0
        with self._lock:
            for row in minutes:
                if row.get("samples"):
                    self._downsampler.minute.seed(aggregate_from_row(row))
            for row in hours:
                if row.get("samples"):
                    self._downsampler.hour.seed(aggregate_from_row(row))
        self.stats.recovered = len(minutes) + len(hours)
        return self.stats.recovered

    def flush_now(self, now: float, final: bool = False) -> bool:
        """Write the buffer and the closed buckets (all open ones with ``final``) in one
        transaction; prune when due. False when the write failed (kept for the next)."""
        with self._lock:
            return self._flush_locked(now, final)

    def _flush_locked(self, now: float, final: bool) -> bool:
        buffer = self._buffer
        samples: list[Sample] = []
        for _ in range(len(buffer)):
            samples.append(buffer.popleft())
        downsampler = self._downsampler
        minutes, hours = downsampler.add(samples)
        closed = downsampler.close_all() if final else downsampler.close_due(now)
        self._pending_minutes += minutes + closed[0]
        self._pending_hours += hours + closed[1]
        pending_minutes, pending_hours = self._pending_minutes, self._pending_hours
        if not (samples or pending_minutes or pending_hours):
            return self._prune(now)
        try:
            self.store.write_history(
                [raw_row(s) for s in samples],
                [bucket_row(a) for a in pending_minutes],
                [bucket_row(a) for a in pending_hours],
            )
        except Exception as exc:
            self.stats.failed_batches += 1
            if not self._failing:
                log.warning("history: a batch was not written (retried): %s", exc)
            self._failing = True
            self._requeue(samples)
            return False
        if self._failing:
            log.info("history: batches are written again")
            self._failing = False
        self.stats.batches += 1
        self.stats.written += len(samples)
        self.stats.buckets += len(pending_minutes) + len(pending_hours)
        self._pending_minutes, self._pending_hours = [], []
        return self._prune(now)

    def _requeue(self, samples: list[Sample]) -> None:
        """A failed batch's samples go back before newer ones, as far as the bound allows
        (the oldest are dropped, counted). Their buckets are already counted: the tiers
        do not need them again."""
        buffer = self._buffer
        room = (buffer.maxlen or 0) - len(buffer)
        keep = samples[-room:] if room > 0 else []
        self.stats.dropped += len(samples) - len(keep)
        buffer.extendleft(reversed(keep))

    def _prune(self, now: float) -> bool:
        if now - self._last_prune < self.config.prune_interval:
            return True
        self._last_prune = now
        try:
            self.stats.pruned += self.store.prune_history(cutoffs(self.config.retentions, now))
        except Exception as exc:
            log.warning("history: pruning failed (tried again later): %s", exc)
            return False
        return True

    # -- queries -----------------------------------------------------------------------------

    def plan(
        self,
        metrics: str | None = None,
        start: float | None = None,
        end: float | None = None,
        points: int | None = None,
    ) -> Plan:
        """``QueryError`` for values that do not fit."""
        return plan(self.config.tiers(), self._clock(), metrics, start, end, points)

    def query(self, p: Plan, worker_id: str | None) -> tuple[dict[str, Any], int]:
        """The answer's JSON object and how many of its buckets hold data (blocking: call
        it in a thread)."""
        rows: Sequence[Sequence[Any]] = []
        if p.points:
            rows = self.store.query_history(p.tier, worker_id, p.metrics, p.start, p.end, p.step)
        return answer(p, rows, worker_id), len(rows)
