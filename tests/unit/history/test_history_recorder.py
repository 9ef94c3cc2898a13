"""HistoryRecorder on a real SQLite store (a file, no sockets): heartbeats in, tiers out,
the bounded buffer, failures, a restart that keeps the tiers whole, pruning."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from cloudai.history.recorder import HistoryConfig, HistoryRecorder, sample_values
from cloudai.history.tiers import METRICS, Sample
from cloudai.store import Store, StoreError, open_store
from cloudai.store.sql_store import SqlStore
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import ResourceTelemetry, TaskTelemetry, WorkerTelemetry

T0 = 1_700_000_000.0  # a multiple of 3600 minus 800 s: 1_699_999_200 is an hour start
HOUR0 = 1_699_999_200.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(None, tmp_path)
    yield s
    s.close()


def beat(worker_id: str, t: float, cpu: float, **resources: Any) -> WorkerTelemetry:
    return WorkerTelemetry(
        worker_id,
        cpu_usage=cpu,
        memory_usage=50.0,
        running_tasks=[TaskTelemetry("t1")],
        last_update=t,
        is_active=True,
        state="active",
        resources=ResourceTelemetry(**resources) if resources else None,
    )


def rows(store: Store, table: str) -> list[dict[str, Any]]:
    assert isinstance(store, SqlStore)
    with store.engine.connect() as conn:
        result = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY worker_id, t")
        return [dict(r._mapping) for r in result]


def test_sample_values_take_what_the_worker_sent() -> None:
    values = sample_values(beat("w", T0, 12.5, memory_used_bytes=1024, load_avg_1m=0.5))
    named = dict(zip(METRICS, values, strict=True))
    assert named["cpu_usage"] == 12.5 and named["running_tasks"] == 1.0
    assert named["memory_used_bytes"] == 1024.0 and named["load_avg_1m"] == 0.5
    assert named["net_rx_bytes_per_sec"] is None
    assert all(v is None for v in sample_values(beat("w", T0, 1))[5:])


def test_only_heartbeats_are_recorded(store: Store) -> None:
    recorder = HistoryRecorder(store, clock=Clock(T0))
    registered = WorkerTelemetry("w", last_update=T0, is_active=True, state="registered")
    recorder.on_telemetry(registered, TelemetryEvent.UPDATE)
    recorder.on_telemetry(beat("w", T0, 1), TelemetryEvent.UPDATE)
    recorder.on_telemetry(beat("w", T0, 1), TelemetryEvent.ACTIVE)  # the same heartbeat
    assert recorder.pending == 1


def test_samples_and_closed_buckets_are_written_together(store: Store) -> None:
    clock = Clock(T0)
    recorder = HistoryRecorder(store, clock=clock)
    for i in range(24):  # two minutes of 5 s heartbeats, from a minute start
        recorder.on_telemetry(beat("w", T0 - 20 + 5 * i, float(i)), TelemetryEvent.UPDATE)
    assert recorder.flush_now(T0 + 100)
    raw = rows(store, "history_raw")
    assert len(raw) == 24 and raw[0]["cpu_usage"] == 0.0
    minutes = rows(store, "history_minute")
    assert [(m["t"], m["samples"]) for m in minutes] == [(T0 - 20, 12)]
    assert minutes[0]["cpu_usage"] == pytest.approx(5.5)
    assert (minutes[0]["cpu_usage_min"], minutes[0]["cpu_usage_max"]) == (0.0, 11.0)
    assert minutes[0]["gpu_usage"] == 0.0 and minutes[0]["net_rx_bytes_per_sec"] is None
    # the second minute closes once its end is the grace in the past
    assert recorder.flush_now(T0 + 100 + 10)
    assert [m["t"] for m in rows(store, "history_minute")] == [T0 - 20, T0 + 40]
    assert recorder.stats.written == 24 and recorder.stats.buckets == 2


def test_a_full_buffer_drops_the_oldest_and_counts(store: Store) -> None:
    recorder = HistoryRecorder(store, HistoryConfig(buffer_size=3), clock=Clock(T0))
    for i in range(5):
        recorder.on_telemetry(beat("w", T0 + i, float(i)), TelemetryEvent.UPDATE)
    assert recorder.stats.dropped == 2
    recorder.flush_now(T0 + 5)
    assert [r["cpu_usage"] for r in rows(store, "history_raw")] == [2.0, 3.0, 4.0]


class FlakyStore(SqlStore):
    fail = True

    def write_history(
        self,
        raw: Sequence[Mapping[str, Any] | Sequence[Any]],
        minutes: Sequence[Mapping[str, Any] | Sequence[Any]] = (),
        hours: Sequence[Mapping[str, Any] | Sequence[Any]] = (),
    ) -> None:
        if self.fail:
            raise StoreError("database is locked")
        super().write_history(raw, minutes, hours)


def test_a_failed_batch_is_written_with_the_next(tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    store = FlakyStore(make_url(f"sqlite:///{tmp_path / 'h.db'}"))
    try:
        recorder = HistoryRecorder(store, clock=Clock(T0))
        for i in range(14):
            recorder.on_telemetry(beat("w", T0 - 20 + 5 * i, 1.0), TelemetryEvent.UPDATE)
        assert not recorder.flush_now(T0 + 50)
        assert recorder.stats.failed_batches == 1 and recorder.pending == 14
        store.fail = False
        assert recorder.flush_now(T0 + 51)
        assert len(rows(store, "history_raw")) == 14
        assert len(rows(store, "history_minute")) == 1  # the closed minute, once
    finally:
        store.close()


def test_a_restart_keeps_the_tiers_whole(tmp_path: Path) -> None:
    """Stop mid-minute (partial buckets written), start again in the same minute: the
    open minute and hour are rebuilt from the store and replaced, not doubled."""
    store = open_store(None, tmp_path)
    start = HOUR0 + 600  # minute 10 of the hour
    clock = Clock(start)
    first = HistoryRecorder(store, clock=clock)
    for i in range(18):  # minute 10 (12 beats, cpu 10) and half of minute 11 (cpu 20)
        first.on_telemetry(
            beat("w", start + 5 * i, 10.0 if i < 12 else 20.0), TelemetryEvent.UPDATE
        )
    clock.now = start + 90
    first.flush_now(clock.now, final=True)  # what stop() does
    assert [m["samples"] for m in rows(store, "history_minute")] == [12, 6]
    assert [h["samples"] for h in rows(store, "history_hour")] == [18]  # partial hour

    second = HistoryRecorder(store, clock=clock)
    assert second.recover(clock.now) == 2  # the open minute (tier 0), the hour (tier 1)
    for i in range(18, 24):  # the rest of minute 11
        second.on_telemetry(beat("w", start + 5 * i, 20.0), TelemetryEvent.UPDATE)
    clock.now = HOUR0 + 3600 + 15
    second.flush_now(clock.now)
    minutes = rows(store, "history_minute")
    assert [(m["t"], m["samples"]) for m in minutes] == [(start, 12), (start + 60, 12)]
    assert minutes[1]["cpu_usage"] == 20.0
    (hour,) = rows(store, "history_hour")
    assert (hour["t"], hour["samples"]) == (HOUR0, 24)
    assert hour["cpu_usage"] == pytest.approx(15.0)
    assert len(rows(store, "history_raw")) == 24
    store.close()


def test_retention_prunes_each_tier(store: Store) -> None:
    now = T0 + 400 * 86_400.0
    store.write_history(
        [{"worker_id": "w", "t": now - 2 * 86_400.0}, {"worker_id": "w", "t": now - 10}],
        [{"worker_id": "w", "t": now - 40 * 86_400.0, "samples": 1}],
        [
            {"worker_id": "w", "t": now - 370 * 86_400.0, "samples": 1},
            {"worker_id": "w", "t": now - 3600, "samples": 1},
        ],
    )
    recorder = HistoryRecorder(store, clock=Clock(now))
    assert recorder.flush_now(now)  # nothing to write; pruning is due
    assert recorder.stats.pruned == 3
    assert [r["t"] for r in rows(store, "history_raw")] == [now - 10]
    assert rows(store, "history_minute") == []
    assert [r["t"] for r in rows(store, "history_hour")] == [now - 3600]


def test_queries_answer_from_the_tier_chosen(store: Store) -> None:
    clock = Clock(T0)
    recorder = HistoryRecorder(store, clock=clock)
    for w in ("a", "b"):
        for i in range(12):
            cpu = 10.0 if w == "a" else 30.0
            recorder.on_telemetry(beat(w, T0 - 60 + 5 * i, cpu), TelemetryEvent.UPDATE)
    recorder.flush_now(T0)
    p = recorder.plan("cpu_usage", T0 - 60, T0, 4)
    body, buckets = recorder.query(p, "a")
    assert (body["tier"], body["resolution"], buckets) == (0, 15.0, 4)
    assert body["series"]["cpu_usage"]["avg"] == [10.0] * 4
    cluster, _ = recorder.query(p, None)
    assert cluster["workers"] == [2, 2, 2, 2]
    assert cluster["series"]["cpu_usage"] == {
        "avg": [20.0] * 4,
        "min": [10.0] * 4,
        "max": [30.0] * 4,
    }
    nobody, none = recorder.query(p, "c")
    assert none == 0 and nobody["series"]["cpu_usage"]["avg"] == [None] * 4


def test_samples_taken_from_elsewhere_keep_the_bound(store: Store) -> None:
    recorder = HistoryRecorder(store, HistoryConfig(buffer_size=2), clock=Clock(T0))
    recorder.take(Sample("w", T0 + i, (float(i),) * len(METRICS)) for i in range(3))
    assert recorder.pending == 2
    stats = recorder.current_stats()
    assert stats.dropped == 1
    stats.dropped = 99  # a copy
    assert recorder.stats.dropped == 1
