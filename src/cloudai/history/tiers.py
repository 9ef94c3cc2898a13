"""Telemetry history tiers: the pure logic (no I/O, no clock of its own, no asyncio).

Tier 0 keeps every heartbeat's figures; tier 1 a bucket per minute, tier 2 a bucket per
hour, each with the average, the minimum and the maximum of every metric over the
bucket. Buckets are built incrementally: a running min/sum/count/max per worker per
open bucket, emitted when the bucket closes (a sample of a later bucket arrives, or the
bucket's end is ``grace`` seconds in the past). Hour buckets are merged from closed
minute buckets, never from the raw samples again.

``choose_tier`` and ``grid`` decide how a query over a range is answered: which tier,
and the step of the points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

METRICS: tuple[str, ...] = (
    "cpu_usage",
    "memory_usage",
    "storage_usage",
    "gpu_usage",
    "running_tasks",
    "memory_used_bytes",
    "storage_used_bytes",
    "gpu_memory_used_bytes",
    "net_rx_bytes_per_sec",
    "net_tx_bytes_per_sec",
    "disk_read_bytes_per_sec",
    "disk_write_bytes_per_sec",
    "load_avg_1m",
    "load_avg_5m",
    "load_avg_15m",
)
"""Every metric kept, in the order of a sample's values (and of the stored columns)."""

MINUTE = 60.0
HOUR = 3600.0
TIER_WIDTHS: tuple[float, float] = (MINUTE, HOUR)
"""The bucket width of tier 1 and tier 2, in seconds."""

Values = tuple[float | None, ...]
"""One value per metric of ``METRICS`` (None: the worker did not send it)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One heartbeat's figures (tier 0)."""

    worker_id: str
    t: float  # Unix seconds
    values: Values


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One closed bucket of a tier: ``samples`` heartbeats from ``t`` to ``t + width``.
    ``avg``/``low``/``high`` have one entry per metric (None: no value in the bucket)."""

    worker_id: str
    t: float  # the bucket's start, Unix seconds, a multiple of its width
    samples: int
    avg: Values
    low: Values
    high: Values


@dataclass(slots=True)
class Bucket:
    """The running figures of one open bucket: per metric a count, sum, min and max."""

    start: float
    samples: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * len(METRICS))
    sums: list[float] = field(default_factory=lambda: [0.0] * len(METRICS))
    lows: list[float | None] = field(default_factory=lambda: [None] * len(METRICS))
    highs: list[float | None] = field(default_factory=lambda: [None] * len(METRICS))

    def add(self, values: Values) -> None:
        """One sample."""
        self.samples += 1
        counts, sums, lows, highs = self.counts, self.sums, self.lows, self.highs
        for i, value in enumerate(values):
            if value is None:
                continue
            counts[i] += 1
            sums[i] += value
            low = lows[i]
            if low is None or value < low:
                lows[i] = value
            high = highs[i]
            if high is None or value > high:
                highs[i] = value

    def merge(self, agg: Aggregate) -> None:
        """A closed bucket of a finer tier: its average weighs as many samples as it had."""
        self.samples += agg.samples
        counts, sums, lows, highs = self.counts, self.sums, self.lows, self.highs
        weight = agg.samples
        for i, avg in enumerate(agg.avg):
            if avg is None:
                continue
            counts[i] += weight
            sums[i] += avg * weight
            low, high = agg.low[i], agg.high[i]
            if low is not None and (lows[i] is None or low < lows[i]):  # type: ignore[operator]
                lows[i] = low
            if high is not None and (highs[i] is None or high > highs[i]):  # type: ignore[operator]
                highs[i] = high

    def close(self, worker_id: str) -> Aggregate:
        avg = tuple(s / c if c else None for s, c in zip(self.sums, self.counts, strict=True))
        return Aggregate(
            worker_id, self.start, self.samples, avg, tuple(self.lows), tuple(self.highs)
        )


class TierAggregator:
    """Open buckets of ``width`` seconds, one per worker, fed samples (``add``) or closed
    buckets of a finer tier (``merge``); each call returns the buckets it closed.

    A sample older than the worker's open bucket (or than one already closed) is *late*:
    it cannot be added to a bucket that was emitted, so it is counted and left out.
    """

    def __init__(self, width: float, grace: float) -> None:
        if width <= 0 or grace < 0:
            raise ValueError("width must be > 0 and grace >= 0")
        self.width = width
        self.grace = grace
        self._open: dict[str, Bucket] = {}
        self._closed_until: dict[str, float] = {}  # worker -> end of its last emitted bucket
        self.late = 0

    def bucket_start(self, t: float) -> float:
        return math.floor(t / self.width) * self.width

    def open_buckets(self) -> int:
        return len(self._open)

    def _bucket_for(self, worker_id: str, t: float, out: list[Aggregate]) -> Bucket | None:
        start = self.bucket_start(t)
        bucket = self._open.get(worker_id)
        if bucket is not None:
            if start == bucket.start:
                return bucket
            if start < bucket.start:
                self.late += 1
                return None
            out.append(bucket.close(worker_id))
            self._closed_until[worker_id] = bucket.start + self.width
        elif start < self._closed_until.get(worker_id, -math.inf):
            self.late += 1
            return None
        bucket = self._open[worker_id] = Bucket(start)
        return bucket

    def add(self, worker_id: str, t: float, values: Values) -> list[Aggregate]:
        out: list[Aggregate] = []
        bucket = self._bucket_for(worker_id, t, out)
        if bucket is not None:
            bucket.add(values)
        return out

    def merge(self, agg: Aggregate) -> list[Aggregate]:
        out: list[Aggregate] = []
        bucket = self._bucket_for(agg.worker_id, agg.t, out)
        if bucket is not None:
            bucket.merge(agg)
        return out

    def seed(self, agg: Aggregate) -> None:
        """Reopen a bucket from what the store holds of it (recovery at start): later
        samples of the same bucket add to it."""
        bucket = Bucket(self.bucket_start(agg.t))
        bucket.merge(agg)
        self._open[agg.worker_id] = bucket

    def close_due(self, now: float) -> list[Aggregate]:
        """Close every bucket whose end is ``grace`` seconds before ``now`` (a worker that
        went silent still gets its last bucket)."""
        limit = now - self.grace - self.width
        due = [w for w, b in self._open.items() if b.start <= limit]
        out = []
        for worker_id in due:
            bucket = self._open.pop(worker_id)
            out.append(bucket.close(worker_id))
            self._closed_until[worker_id] = bucket.start + self.width
        return out

    def close_all(self) -> list[Aggregate]:
        """Every open bucket, partial (at stop: written so that nothing is lost; a master
        that starts again within the bucket rebuilds it from the store and replaces it)."""
        out = [bucket.close(worker_id) for worker_id, bucket in self._open.items()]
        self._open.clear()
        return out

    def forget(self, worker_id: str) -> None:
        self._open.pop(worker_id, None)
        self._closed_until.pop(worker_id, None)


@dataclass(slots=True)
class Downsampler:
    """Tier 1 from samples, tier 2 from tier 1's closed buckets."""

    minute: TierAggregator
    hour: TierAggregator

    @classmethod
    def create(cls, grace: float = 10.0) -> Downsampler:
        return cls(TierAggregator(MINUTE, grace), TierAggregator(HOUR, grace))

    def add(self, samples: Iterable[Sample]) -> tuple[list[Aggregate], list[Aggregate]]:
        """Closed minute and hour buckets after these samples."""
        minutes: list[Aggregate] = []
        for sample in samples:
            minutes.extend(self.minute.add(sample.worker_id, sample.t, sample.values))
        return minutes, self._hours(minutes)

    def close_due(self, now: float) -> tuple[list[Aggregate], list[Aggregate]]:
        minutes = self.minute.close_due(now)
        hours = self._hours(minutes)
        hours.extend(self.hour.close_due(now))
        return minutes, hours

    def close_all(self) -> tuple[list[Aggregate], list[Aggregate]]:
        minutes = self.minute.close_all()
        hours = self._hours(minutes)
        hours.extend(self.hour.close_all())
        return minutes, hours

    def _hours(self, minutes: Sequence[Aggregate]) -> list[Aggregate]:
        hours: list[Aggregate] = []
        for agg in minutes:
            hours.extend(self.hour.merge(agg))
        return hours


# -- queries ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TierSpec:
    """A tier as queries see it: its (nominal) resolution and how far back it reaches."""

    tier: int
    resolution: float  # seconds between points
    retention: float  # seconds


def choose_tier(
    tiers: Sequence[TierSpec], start: float, end: float, points: int, now: float
) -> int:
    """The tier that answers ``start..end`` in about ``points`` points.

    Among the tiers whose retention reaches back to ``start``: the finest whose point
    count over the range is at most 2 x ``points``; but when that one would give fewer
    than half the points asked for and a finer tier reaches ``start``, the finer one
    (downsampled to ``points``). No tier reaches ``start``: the one that reaches furthest.
    """
    if not tiers:
        raise ValueError("no tiers")
    span = max(end - start, 0.0)
    covering = [spec for spec in tiers if start >= now - spec.retention]
    if not covering:
        return max(tiers, key=lambda spec: spec.retention).tier
    covering.sort(key=lambda spec: spec.resolution)
    for i, spec in enumerate(covering):
        count = span / spec.resolution
        if count <= 2 * points:
            if count < points / 2 and i > 0:
                return covering[i - 1].tier
            return spec.tier
    return covering[-1].tier


def grid(start: float, end: float, points: int, resolution: float) -> tuple[float, int]:
    """The step (a whole multiple of ``resolution``) and the number of points (at most
    ``points``) that cover ``start..end``: point ``k`` is the bucket
    ``[start + k*step, start + (k+1)*step)``."""
    if points < 1 or resolution <= 0:
        raise ValueError("points must be >= 1 and resolution > 0")
    span = max(end - start, 0.0)
    multiple = max(1, math.ceil(span / points / resolution - 1e-9))
    step = multiple * resolution
    count = max(1, math.ceil(span / step - 1e-9))
    return step, min(count, points)


def cutoffs(retentions: Sequence[float], now: float) -> list[float]:
    """Per tier, the time before which its rows are deleted."""
    return [now - retention for retention in retentions]
