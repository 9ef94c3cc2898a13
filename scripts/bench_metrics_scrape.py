#!/usr/bin/env python3
"""What a Prometheus scrape of ``GET /metrics`` costs with many workers.

Builds a master's parts in this process (TelemetryManager, TelemetryHub, TaskBook, the
store's writers on a SQLite file in a temporary directory), registers ``--workers``
workers and applies one heartbeat each, with the richer telemetry (bytes, rates, load,
two GPUs) so that every per-worker family is filled (``--plain``: the original
telemetry only, as a Go worker sends it). Then, ``--repeat`` times:

- ``stage``: the figures read on the event loop (``MasterMetrics.stage``);
- ``render``: the text of what was staged (done in a thread by the server), and, for
  comparison, ``generic_render``: the same text from ``generate_latest`` alone (the
  server writes the per-worker block with ``worker_metrics.worker_text``, to the same bytes);
- ``scrape``: one real HTTP scrape: GET /metrics on an aiohttp server on loopback,
  ``Accept-Encoding: gzip`` as Prometheus sends it, to the last byte; with the largest
  event-loop lag a 1 ms probe saw meanwhile (how long the loop was held at a stretch).

And the per-heartbeat cost with and without the metrics built (the collectors subscribe
to nothing, so it should not differ): ``process_heartbeat`` plus applying it, timed over
``--heartbeats`` heartbeats.

    .venv/bin/python scripts/bench_metrics_scrape.py --workers 10000 --repeat 5 \\
        | tee -a docs/perf/metrics/scrape.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import generate_latest

from cloudai.loop import event_loop_factory
from cloudai.master import metrics
from cloudai.master.metrics import MasterMetrics
from cloudai.master.persistence import MasterPersistence
from cloudai.master.rate_meter import RateMeter
from cloudai.master.registry import WorkerRegistry
from cloudai.master.service import ServiceStats
from cloudai.master.settings import MasterSettings
from cloudai.master.tasks import TaskBook
from cloudai.master.tuning import tuned_process
from cloudai.master.ws_hub import TelemetryHub
from cloudai.proto import pb
from cloudai.store import open_store
from cloudai.telemetry.manager import TelemetryManager


def plain_heartbeat(worker_id: str, i: int) -> pb.Heartbeat:
    """What a Go worker sends: the original telemetry only."""
    return pb.Heartbeat(
        worker_id=worker_id,
        cpu_usage=float(i % 100),
        memory_usage=50.0,
        storage_usage=25.0,
        gpu_usage=10.0,
        running_tasks=[pb.RunningTask(task_id=f"{worker_id}-t", cpu_allocated=1.0)],
    )


def heartbeat(worker_id: str, i: int) -> pb.Heartbeat:
    return pb.Heartbeat(
        worker_id=worker_id,
        cpu_usage=float(i % 100),
        memory_usage=50.0,
        storage_usage=25.0,
        gpu_usage=10.0,
        running_tasks=[pb.RunningTask(task_id=f"{worker_id}-t", cpu_allocated=1.0)],
        net_rx_bytes_per_sec=1000.0,
        net_tx_bytes_per_sec=2000.0,
        disk_read_bytes_per_sec=3000.0,
        disk_write_bytes_per_sec=4000.0,
        load_avg_1m=0.5,
        load_avg_5m=0.4,
        load_avg_15m=0.3,
        memory_used_bytes=8 * 1024**3,
        memory_total_bytes=16 * 1024**3,
        storage_used_bytes=100 * 1024**3,
        storage_total_bytes=500 * 1024**3,
        gpu_memory_used_bytes=4 * 1024**3,
        gpu_memory_total_bytes=80 * 1024**3,
        gpus=[
            pb.GpuDevice(index=g, name="H100", uuid=f"GPU-{g}", utilization=10.0) for g in range(2)
        ],
    )


def heartbeat_cost(
    telemetry: TelemetryManager, workers: list[str], count: int, plain: bool
) -> float:
    """Microseconds per heartbeat: queued by the RPC path's call, then applied."""
    make = plain_heartbeat if plain else heartbeat
    beats = [make(workers[i % len(workers)], i) for i in range(count)]
    started = time.perf_counter()
    for hb in beats:
        telemetry.process_heartbeat(hb)  # not started: applied inline
    return (time.perf_counter() - started) / count * 1e6


async def measure(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    # The master's process tuning (GIL switch interval, GC pacer), as ``run_master``.
    fields = MasterSettings.model_fields
    async with tuned_process(
        gil_switch_interval=fields["gil_switch_interval"].default,
        gc_young_interval=fields["gc_young_interval"].default,
        gc_full_interval=fields["gc_full_interval"].default,
        gc_refresh_interval=fields["gc_refresh_interval"].default,
    ):
        return await _measure(args, data_dir)


def manager(workers: list[str], plain: bool) -> TelemetryManager:
    telemetry = TelemetryManager(30.0)
    for worker_id in workers:
        telemetry.register_worker(worker_id)
    heartbeat_cost(telemetry, workers, len(workers), plain)  # one heartbeat each
    return telemetry


async def _measure(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    workers = [f"worker-{i:05d}" for i in range(args.workers)]
    telemetry = manager(workers, args.plain)
    bare = manager(workers, args.plain)  # the same, without metrics

    registry = WorkerRegistry()
    store = open_store(None, data_dir)
    master = MasterMetrics.for_master(
        service=ServiceStats(),
        telemetry=telemetry,
        hub=TelemetryHub(),
        tasks=TaskBook(registry, link=None),  # type: ignore[arg-type]
        persistence=MasterPersistence(store, heartbeat_flush_interval=5.0),
        ingest_rate=RateMeter(),
    )
    # Rounds taken in turns, so that the machine's load weighs on both alike.
    without, with_metrics = [], []
    for _ in range(5):
        without.append(heartbeat_cost(bare, workers, args.heartbeats, args.plain))
        with_metrics.append(heartbeat_cost(telemetry, workers, args.heartbeats, args.plain))

    app = web.Application()
    metrics.add_routes(app, master)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    stage, render, generic, scrape, lag, sizes = [], [], [], [], [], []
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            for _ in range(args.repeat):
                started = time.perf_counter()
                staged = master.stage()
                stage.append(time.perf_counter() - started)
                started = time.perf_counter()
                text = staged.render()
                render.append(time.perf_counter() - started)
                started = time.perf_counter()
                generate_latest(staged)
                generic.append(time.perf_counter() - started)

                worst = 0.0
                done = asyncio.Event()

                async def probe(done: asyncio.Event) -> None:
                    nonlocal worst
                    while not done.is_set():
                        due = time.perf_counter() + 0.001
                        await asyncio.sleep(0.001)
                        worst = max(worst, time.perf_counter() - due)

                prober = asyncio.ensure_future(probe(done))
                started = time.perf_counter()
                async with session.get(
                    f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip"}
                ) as response:
                    body = await response.read()
                scrape.append(time.perf_counter() - started)
                done.set()
                await prober
                lag.append(worst)
                assert response.status == 200
                sizes.append((len(text), len(body), len(gzip.decompress(body))))
    finally:
        await runner.cleanup()
        store.close()
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    return {
        "workers": args.workers,
        "telemetry": "plain" if args.plain else "rich",
        "series": series,
        "text_bytes": sizes[-1][0],
        "gzip_bytes": sizes[-1][1],
        "stage_ms": round(statistics.median(stage) * 1000, 1),
        "render_ms": round(statistics.median(render) * 1000, 1),
        "generic_render_ms": round(statistics.median(generic) * 1000, 1),
        "scrape_ms": round(statistics.median(scrape) * 1000, 1),
        "scrape_max_ms": round(max(scrape) * 1000, 1),
        "loop_lag_during_scrape_max_ms": round(max(lag) * 1000, 1),
        "heartbeat_us_without_metrics": round(statistics.median(without), 2),
        "heartbeat_us_with_metrics": round(statistics.median(with_metrics), 2),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # the machine is shared: how busy
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--heartbeats", type=int, default=50_000)
    parser.add_argument(
        "--plain", action="store_true", help="heartbeats without the richer telemetry (Go workers)"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        asyncio.Runner(loop_factory=event_loop_factory()) as runner,
    ):
        result = runner.run(measure(args, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
