"""The telemetry history tiers in the store, the same on SQLite and PostgreSQL (see
conftest.py): batched writes, replacement of a rebuilt bucket, bucketed queries for one
worker and across workers, recovery of the open buckets, pruning, migration 0006."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect

from cloudai.history.recorder import HistoryRecorder
from cloudai.history.tiers import METRICS
from cloudai.store import SqlStore, Store
from cloudai.store.migrate import alembic_config
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import ResourceTelemetry, WorkerTelemetry

HOUR0 = 1_699_999_200.0  # an hour's start


def raw(worker_id: str, t: float, cpu: float, **more: float | None) -> dict[str, Any]:
    return {"worker_id": worker_id, "t": t, "cpu_usage": cpu, **more}


def bucket(
    worker_id: str, t: float, samples: int, avg: float, low: float, high: float
) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "t": t,
        "samples": samples,
        "cpu_usage": avg,
        "cpu_usage_min": low,
        "cpu_usage_max": high,
    }


def test_raw_rows_bucketed_per_worker_and_across_workers(store: Store) -> None:
    store.write_history(
        [raw("a", HOUR0 + 5 * i, float(i), gpu_usage=None) for i in range(12)]
        + [raw("b", HOUR0 + 5 * i, 100.0) for i in range(6)]
    )
    store.write_history([raw("a", HOUR0, 99.0)])  # a duplicate heartbeat: ignored
    rows = store.query_history(0, "a", ["cpu_usage", "gpu_usage"], HOUR0, HOUR0 + 60, 30)
    assert rows == [
        (0, 1, 2.5, 0.0, 5.0, None, None, None),
        (1, 1, 8.5, 6.0, 11.0, None, None, None),
    ]
    cluster = store.query_history(0, None, ["cpu_usage"], HOUR0, HOUR0 + 60, 30)
    assert cluster == [(0, 2, pytest.approx(51.25), 0.0, 100.0), (1, 1, 8.5, 6.0, 11.0)]
    # a range that starts mid-way: buckets count from its start
    rows = store.query_history(0, "a", ["cpu_usage"], HOUR0 + 7, HOUR0 + 27, 10)
    assert rows == [(0, 1, 2.5, 2.0, 3.0), (1, 1, 4.5, 4.0, 5.0)]


def test_buckets_weigh_their_samples_and_a_rebuilt_one_replaces_the_stored(store: Store) -> None:
    store.write_history([], [bucket("a", HOUR0, 1, 50.0, 50.0, 50.0)])
    store.write_history([], [bucket("a", HOUR0, 3, 10.0, 0.0, 20.0)])  # replaces
    store.write_history([], [bucket("a", HOUR0 + 60, 1, 50.0, 40.0, 90.0)])
    rows = store.query_history(1, "a", ["cpu_usage", "memory_usage"], HOUR0, HOUR0 + 120, 120)
    assert rows == [(0, 1, pytest.approx(20.0), 0.0, 90.0, None, None, None)]
    store.write_history([], [], [bucket("a", HOUR0, 4, 20.0, 0.0, 90.0)])
    assert store.query_history(2, "a", ["cpu_usage"], HOUR0, HOUR0 + 3600, 3600) == [
        (0, 1, 20.0, 0.0, 90.0)
    ]


def test_recovery_reads_the_open_minute_and_hour(store: Store) -> None:
    minute = HOUR0 + 120
    store.write_history(
        [raw("a", minute + 5 * i, 10.0 * i) for i in range(3)],
        [
            bucket("a", HOUR0, 12, 1.0, 0.0, 2.0),
            bucket("a", HOUR0 + 60, 12, 3.0, 2.0, 4.0),
            bucket("a", minute, 2, 99.0, 99.0, 99.0),  # written partial at a stop: not counted
        ],
    )
    minutes, hours = store.recover_history(minute, HOUR0)
    (m,) = minutes
    assert (m["worker_id"], m["t"], m["samples"]) == ("a", minute, 3)
    assert (m["cpu_usage"], m["cpu_usage_min"], m["cpu_usage_max"]) == (10.0, 0.0, 20.0)
    assert m["gpu_usage"] is None
    (h,) = hours
    assert (h["t"], h["samples"], h["cpu_usage"]) == (HOUR0, 24, 2.0)
    assert (h["cpu_usage_min"], h["cpu_usage_max"]) == (0.0, 4.0)


def test_prune_deletes_by_time(store: Store) -> None:
    store.write_history(
        [raw("a", 100.0, 1.0), raw("a", 200.0, 1.0)],
        [bucket("a", 60.0, 1, 1, 1, 1), bucket("a", 240.0, 1, 1, 1, 1)],
        [bucket("a", 0.0, 1, 1, 1, 1)],
    )
    assert store.prune_history([150.0, 100.0, 0.0]) == 2
    assert store.query_history(0, "a", ["cpu_usage"], 0, 1000, 1000) == [(0, 1, 1.0, 1.0, 1.0)]


async def test_the_recorder_writes_every_metric(open_: Callable[[], Store]) -> None:
    store = open_()
    recorder = HistoryRecorder(store, clock=lambda: HOUR0 + 200)
    figures: dict[str, Any] = {name: 7.0 for name in METRICS[5:]}
    resources = ResourceTelemetry(**figures)
    for i in range(13):
        state = WorkerTelemetry(
            "w", 1.0, 2.0, 3.0, 4.0, [], HOUR0 + 5 * i, True, "active", resources
        )
        recorder.on_telemetry(state, TelemetryEvent.UPDATE)
    assert await recorder.flush()
    p = recorder.plan(None, HOUR0, HOUR0 + 60, 1)
    body, buckets = recorder.query(p, "w")
    assert buckets == 1 and body["tier"] == 1  # one point for a minute: the minute tier
    assert {name: s["avg"][0] for name, s in body["series"].items()} == {
        "cpu_usage": 1.0,
        "memory_usage": 2.0,
        "storage_usage": 3.0,
        "gpu_usage": 4.0,
        "running_tasks": 0.0,
        **{name: 7.0 for name in METRICS[5:]},
    }
    raw_rows = store.query_history(0, "w", list(METRICS), HOUR0, HOUR0 + 60, 60)
    assert raw_rows[0][:5] == (0, 1, 1.0, 1.0, 1.0)


def test_migration_0006_down_and_up(store: Store) -> None:
    assert isinstance(store, SqlStore)
    tables = {"history_raw", "history_minute", "history_hour"}
    assert tables <= set(inspect(store.engine).get_table_names())
    with store.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0005")
    assert not tables & set(inspect(store.engine).get_table_names())
    with store.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert tables <= set(inspect(store.engine).get_table_names())
