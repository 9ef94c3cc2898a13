#!/usr/bin/env python3
"""Telemetry history: fill a store with 24 h of 5 s heartbeats for N workers through the
master's own writer (``HistoryRecorder``: the subscriber, the incremental tiers, the
batched writes), then time queries through the same function the API calls and measure
each tier's size on disk.

    .venv/bin/python scripts/bench_history.py --backend sqlite --workers 100
    .venv/bin/python scripts/bench_history.py --backend postgresql --workers 100 \\
        --pg-url postgresql://postgres@127.0.0.1:5432/postgres

Prints one JSON object (docs/PERFORMANCE.md, "Telemetry history").
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from cloudai.history.recorder import HistoryConfig, HistoryRecorder
from cloudai.store import SqlStore, open_store
from cloudai.store.schema import HISTORY_TABLES
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import ResourceTelemetry, TaskTelemetry, WorkerTelemetry

DAY = 86_400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def state(worker_id: str, t: float, rng: random.Random) -> WorkerTelemetry:
    """A heartbeat with every figure a worker of ours sends."""
    cpu = rng.uniform(0, 100)
    resources = ResourceTelemetry(
        net_rx_bytes_per_sec=rng.uniform(0, 1e8),
        net_tx_bytes_per_sec=rng.uniform(0, 1e8),
        disk_read_bytes_per_sec=rng.uniform(0, 1e8),
        disk_write_bytes_per_sec=rng.uniform(0, 1e8),
        load_avg_1m=cpu / 25,
        load_avg_5m=cpu / 30,
        load_avg_15m=cpu / 35,
        memory_used_bytes=rng.randrange(1 << 34),
        memory_total_bytes=1 << 35,
        storage_used_bytes=rng.randrange(1 << 40),
        storage_total_bytes=1 << 41,
        gpu_memory_used_bytes=rng.randrange(1 << 34),
        gpu_memory_total_bytes=1 << 35,
    )
    tasks = [TaskTelemetry(f"task-{i}") for i in range(rng.randrange(4))]
    return WorkerTelemetry(
        worker_id,
        cpu,
        rng.uniform(0, 100),
        rng.uniform(0, 100),
        rng.uniform(0, 100),
        tasks,
        t,
        True,
        "active",
        resources,
    )


def fill(
    recorder: HistoryRecorder,
    clock: Clock,
    workers: int,
    start: float,
    hours: float,
    batch_rows: int,
) -> dict[str, float]:
    """24 h of heartbeats, written in batches of ``batch_rows`` (the master writes every
    second: 2,000 rows for 10,000 workers at 5 s). CPU times: the subscriber's (on the
    event loop in a master) and the writer's (its thread), per heartbeat."""
    rng = random.Random(1)
    ids = [f"w{i:05d}" for i in range(workers)]
    states = 0
    subscriber_s = 0.0
    write_s = 0.0
    write_wall_s = 0.0
    end = start + hours * 3600.0
    t = start
    batch_every = 5.0 * max(1, batch_rows // workers)  # simulated seconds per flush
    next_flush = start + batch_every
    while t < end:
        made = [state(w, t + (i % 50) * 0.1, rng) for i, w in enumerate(ids)]
        began = time.thread_time()
        for s in made:
            recorder.on_telemetry(s, TelemetryEvent.UPDATE)
        subscriber_s += time.thread_time() - began
        states += len(made)
        t += 5.0
        if t >= next_flush:
            clock.now = t
            began, wall = time.thread_time(), time.perf_counter()
            assert recorder.flush_now(t), "a batch failed"
            write_s += time.thread_time() - began
            write_wall_s += time.perf_counter() - wall
            next_flush += batch_every
    clock.now = end
    recorder.flush_now(end, final=True)  # the last minute and hour
    return {
        "samples": states,
        "batch_rows": int(batch_every / 5.0) * workers,
        "subscriber_cpu_us_per_heartbeat": round(subscriber_s / states * 1e6, 2),
        "writer_cpu_us_per_heartbeat": round(write_s / states * 1e6, 2),
        "writer_wall_us_per_heartbeat": round(write_wall_s / states * 1e6, 2),
        "cpu_pct_of_a_core_at_2000_per_s": round((subscriber_s + write_s) / states * 2000 * 100, 2),
    }


def time_query(
    recorder: HistoryRecorder,
    worker_id: str | None,
    start: float,
    end: float,
    points: int,
    repeat: int,
    metrics: str | None = None,
) -> dict[str, Any]:
    times = []
    body: dict[str, Any] = {}
    for _ in range(repeat):
        began = time.perf_counter()
        p = recorder.plan(metrics, start, end, points)
        body, _buckets = recorder.query(p, worker_id)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return {
        "tier": body["tier"],
        "points": len(body["t"]),
        "resolution": body["resolution"],
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)], 2),
        "max_ms": round(times[-1], 2),
        "repeat": repeat,
    }


def table_sizes(store: SqlStore) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with store.engine.connect() as conn:
        for table in HISTORY_TABLES:
            rows = int(conn.execute(text(f"SELECT count(*) FROM {table.name}")).scalar_one())
            if store.backend == "postgresql":
                size = conn.execute(
                    text("SELECT pg_total_relation_size(:t)"), {"t": table.name}
                ).scalar_one()
            else:
                size = conn.execute(
                    text(
                        "SELECT sum(pgsize) FROM dbstat WHERE name = :t OR name IN "
                        "(SELECT name FROM sqlite_master WHERE tbl_name = :t AND type = 'index')"
                    ),
                    {"t": table.name},
                ).scalar_one()
            out[table.name] = {"rows": rows, "bytes": int(size or 0)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--batch-rows", type=int, default=2000)
    args = parser.parse_args()

    now = math.floor(time.time() / 3600) * 3600.0
    start = now - args.hours * 3600.0
    clock = Clock(start)
    data_dir = Path(tempfile.mkdtemp(prefix="cloudai-history-bench-"))
    database_url = None
    pg_name = None
    if args.backend == "postgresql":
        import psycopg
        from sqlalchemy.engine import make_url

        pg_name = f"cloudai_history_bench_{int(time.time())}"
        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        database_url = make_url(args.pg_url).set(database=pg_name).render_as_string(False)
    store = open_store(database_url, data_dir)
    assert isinstance(store, SqlStore)
    try:
        recorder = HistoryRecorder(store, HistoryConfig(buffer_size=10**7), clock=clock)
        filled = fill(recorder, clock, args.workers, start, args.hours, args.batch_rows)
        if store.backend == "postgresql":  # what autovacuum does on a server that runs
            autocommit = store.engine.execution_options(isolation_level="AUTOCOMMIT")
            with autocommit.connect() as conn:
                for table in HISTORY_TABLES:
                    conn.execute(text(f"VACUUM ANALYZE {table.name}"))
        # queries run "at" the end of the filled day
        clock.now = now
        w = "w00042" if args.workers > 42 else "w00000"
        queries = {
            "worker_24h_300": time_query(recorder, w, now - DAY, now, 300, args.repeat),
            "worker_1h_300": time_query(recorder, w, now - 3600, now, 300, args.repeat),
            "worker_6h_300": time_query(recorder, w, now - 6 * 3600, now, 300, args.repeat),
            "worker_24h_300_cpu": time_query(
                recorder, w, now - DAY, now, 300, args.repeat, "cpu_usage"
            ),
            "cluster_24h_300": time_query(recorder, None, now - DAY, now, 300, 10),
            "cluster_24h_300_cpu": time_query(recorder, None, now - DAY, now, 300, 10, "cpu_usage"),
            "cluster_1h_300_cpu": time_query(recorder, None, now - 3600, now, 300, 10, "cpu_usage"),
        }
        sizes = table_sizes(store)
        days = args.hours / 24.0
        per_worker_day = {
            name: round(size["bytes"] / args.workers / days) for name, size in sizes.items()
        }
        per_row = {
            name: round(size["bytes"] / size["rows"], 1) if size["rows"] else None
            for name, size in sizes.items()
        }
        print(
            json.dumps(
                {
                    "backend": args.backend,
                    "workers": args.workers,
                    "hours": args.hours,
                    "fill": filled,
                    "queries": queries,
                    "tables": sizes,
                    "bytes_per_row": per_row,
                    "bytes_per_worker_day": per_worker_day,
                    "machine": platform.machine(),
                    "python": platform.python_version(),
                },
                indent=1,
            )
        )
    finally:
        store.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        if pg_name is not None:
            import psycopg

            with psycopg.connect(args.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
