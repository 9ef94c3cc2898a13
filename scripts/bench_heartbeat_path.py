#!/usr/bin/env python3
"""CPU per heartbeat of the master's own path, without gRPC: what our code adds to the
do-nothing floor (docs/PERFORMANCE.md, "The master's own path").

Assembles and starts a real master in this process (plaintext, ephemeral ports, a
fresh SQLite data directory, the master's process tuning), registers ``--workers``
workers through ``MasterService.RegisterWorker``, then calls ``SendHeartbeat`` directly
at ``--rate`` per second for ``--seconds``, each call as its own task (as grpc.aio runs
a call). Reports the process's CPU while idle (workers registered, no heartbeats) and
with a do-nothing call in its place (the driver: a task and a timer per call, as grpc.aio
pays too) and under load; the difference per heartbeat is the master's own cost: validation,
liveness, the per-worker task, every subscriber (persistence, history, alerts, tasks,
fan-out) and the periodic work that grows with heartbeats (heartbeat times, history
batches). Less noisy than a full bench: no generator shares the machine.

    .venv/bin/python scripts/bench_heartbeat_path.py --workers 10000 --rate 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cloudai.loop import event_loop_factory
from cloudai.master.server import assemble
from cloudai.master.settings import MasterSettings
from cloudai.master.tuning import tuned_process
from cloudai.proto import pb


class _Context:
    """What the service asks of a grpc.aio context on the accepted path."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def abort(self, *args: Any) -> None:
        raise RuntimeError(f"refused: {args}")


def address(i: int) -> str:
    return f"10.{i // 62500}.{i // 250 % 250}.{i % 250}:50052"


async def measure(workers: int, rate: float, seconds: float) -> dict[str, Any]:
    ids = [f"w{i:05d}" for i in range(workers)]
    settings = MasterSettings(
        grpc_host="127.0.0.1",
        grpc_port=0,
        http_host="127.0.0.1",
        http_port=0,
        data_dir=Path(tempfile.mkdtemp(prefix="cloudai-hb-path-")),
        insecure=True,
        interactive=False,
        allowed_workers={worker_id: address(i) for i, worker_id in enumerate(ids)},
    )
    server = await assemble(settings)
    await server.start()
    service, context = server.parts.service, _Context()
    try:
        for i, worker_id in enumerate(ids):
            info = pb.WorkerInfo(
                worker_id=worker_id, worker_ip=address(i), total_cpu=8, total_memory=16
            )
            ack = await service.RegisterWorker(info, context)
            if not ack.success:
                raise SystemExit(f"registration refused: {ack.message}")
        rng = random.Random(1)
        beats = [
            pb.Heartbeat(
                worker_id=worker_id,
                cpu_usage=rng.uniform(0, 90),
                memory_usage=rng.uniform(0, 90),
                storage_usage=50.0,
                running_tasks=[pb.RunningTask(task_id=f"{worker_id}-t0", cpu_allocated=1.0)],
            )
            for worker_id in ids
        ]
        async with tuned_process(
            gil_switch_interval=settings.gil_switch_interval,
            gc_young_interval=settings.gc_young_interval,
            gc_full_interval=settings.gc_full_interval,
            gc_refresh_interval=settings.gc_refresh_interval,
        ):
            await asyncio.sleep(3.0)  # registrations written, tasks settled
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds / 2)
            idle = (time.process_time() - cpu) / (time.perf_counter() - wall)

            async def nothing(heartbeat: pb.Heartbeat) -> None:
                return None

            async def call(heartbeat: pb.Heartbeat) -> None:
                await service.SendHeartbeat(heartbeat, context)  # type: ignore[arg-type]

            driver = await drive(nothing, beats, rate, seconds) - idle
            busy = await drive(call, beats, rate, seconds) - idle
    finally:
        await server.stop()
    return {
        "workers": workers,
        "rate": rate,
        "idle_cpu_pct": round(idle * 100, 1),
        "driver_cpu_pct": round(driver * 100, 1),
        "load_cpu_pct": round((busy + idle) * 100, 1),
        "us_per_heartbeat": round((busy - driver) / rate * 1e6, 1),
    }


async def drive(
    call: Callable[[pb.Heartbeat], Awaitable[None]],
    beats: list[pb.Heartbeat],
    rate: float,
    seconds: float,
) -> float:
    """Run ``call`` ``rate`` times a second, each as a task; the process's CPU (share of
    a core) meanwhile."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()
    sent = 0
    cpu, wall = time.process_time(), time.perf_counter()
    while (elapsed := time.perf_counter() - wall) < seconds:
        while sent < int(elapsed * rate):
            task = loop.create_task(call(beats[sent % len(beats)]))
            running.add(task)
            task.add_done_callback(running.discard)
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*running)  # the last calls run
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2_000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        result = runner.run(measure(args.workers, args.rate, args.seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
