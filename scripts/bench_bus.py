#!/usr/bin/env python3
"""What the bus costs per heartbeat (docs/SCALING.md): the publish on a gateway, the
consumption on the master, and the latency the bus adds. Needs a NATS server with
JetStream (``--bus``, default nats://127.0.0.1:4222).

1. Publish, in this process: core NATS (``NatsBus.publish`` of the telemetry envelope, as
   a gateway does) vs JetStream (the same message into a memory stream with a short
   max-age, one PubAck awaited per message, and 256 in flight). CPU per message of this
   process and of nats-server, messages/s.
2. Consume, in a child process running the master's own path: ``BusIngest`` with a
   ``WorkerRegistry`` (every worker in session), a started ``TelemetryManager`` and a
   ``MasterService``: decode, session check, ``process_heartbeat``. Its CPU per message
   at a paced rate.
3. Latency: publish -> the master's handler, paced at ``--rate`` (the gateway's receive
   time travels in the envelope; one clock, one machine): p50/p99/max.

    python scripts/bench_bus.py --rate 2000 --seconds 10 --workers 1000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
import uuid
from typing import Any

import psutil

from cloudai.bus.codec import encode_telemetry
from cloudai.bus.nats_bus import NatsBus
from cloudai.bus.subjects import Subjects
from cloudai.proto import pb


def heartbeat(worker: int) -> bytes:
    hb = pb.Heartbeat(
        worker_id=f"bench-{worker:05d}",
        cpu_usage=12.5,
        memory_usage=40.0,
        storage_usage=30.0,
        running_tasks=[pb.RunningTask(task_id="t1", cpu_allocated=1, status="running")],
    )
    return hb.SerializeToString()


def nats_cpu() -> float:
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "nats-server":
            times = proc.cpu_times()
            return float(times.user + times.system)
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


async def publish_costs(args: argparse.Namespace) -> None:
    prefix = f"bb{uuid.uuid4().hex[:8]}"
    subjects = Subjects(prefix)
    payloads = [heartbeat(i) for i in range(args.workers)]
    bus = NatsBus([args.bus], name="bench-bus")
    await bus.connect()
    n = args.messages
    c0, n0, t0 = time.process_time(), nats_cpu(), time.perf_counter()
    for i in range(n):
        w = i % args.workers
        await bus.publish(
            subjects.telemetry(f"bench-{w:05d}"), encode_telemetry(payloads[w], time.time())
        )
    await bus.flush()
    c1, n1, t1 = time.process_time(), nats_cpu(), time.perf_counter()
    print(
        f"core NATS publish: {(c1 - c0) / n * 1e6:.1f} us CPU/msg (publisher), "
        f"{(n1 - n0) / n * 1e6:.1f} us (nats-server, no subscriber), {n / (t1 - t0):,.0f} msg/s"
    )
    import nats
    from nats.js.api import StorageType, StreamConfig

    nc = await nats.connect(args.bus)
    js = nc.jetstream()
    stream = f"BENCH_{prefix.upper()}"
    await js.add_stream(
        StreamConfig(
            name=stream,
            subjects=[f"{prefix}.js.>"],
            max_age=30,
            storage=StorageType.MEMORY,
            max_msgs_per_subject=1,
        )
    )
    try:
        for label, count, window in (
            ("1 PubAck awaited at a time", n // 10, 1),
            ("256 in flight", n // 2, 256),
        ):
            c0, n0, t0 = time.process_time(), nats_cpu(), time.perf_counter()
            for start in range(0, count, window):
                await asyncio.gather(
                    *(
                        js.publish(
                            f"{prefix}.js.bench-{i % args.workers:05d}",
                            encode_telemetry(payloads[i % args.workers], time.time()),
                        )
                        for i in range(start, min(count, start + window))
                    )
                )
            c1, n1, t1 = time.process_time(), nats_cpu(), time.perf_counter()
            print(
                f"JetStream publish ({label}): {(c1 - c0) / count * 1e6:.1f} us CPU/msg "
                f"(publisher), {(n1 - n0) / count * 1e6:.1f} us (nats-server), "
                f"{count / (t1 - t0):,.0f} msg/s"
            )
    finally:
        await js.delete_stream(stream)
        await nc.close()
    await bus.close()


def consumer_main(args: argparse.Namespace, prefix: str, conn: Any) -> None:
    from cloudai.loop import event_loop_factory

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(consume(args, prefix, conn))


async def consume(args: argparse.Namespace, prefix: str, conn: Any) -> None:
    from cloudai.bus.codec import decode_telemetry
    from cloudai.master.bus_ingest import BusIngest
    from cloudai.master.registry import WorkerRegistry
    from cloudai.master.service import MasterService
    from cloudai.telemetry.manager import TelemetryManager

    class Results:
        async def record_result(self, result: pb.TaskResult) -> tuple[bool, str]:
            return False, ""

    registry = WorkerRegistry()
    for i in range(args.workers):
        worker_id = f"bench-{i:05d}"
        registry.authorise(worker_id)
        registry.register(pb.WorkerInfo(worker_id=worker_id, total_cpu=1))
    telemetry = TelemetryManager(30.0)
    telemetry.start()
    latencies: list[float] = []
    ingest = BusIngest(
        NatsBus([args.bus], name="bench-master"),
        Subjects(prefix),
        registry,
        telemetry,
        MasterService(registry, telemetry, Results()),
        None,
    )
    original = ingest._on_telemetry

    async def timed(msg: Any) -> None:  # the envelope's time: when the "gateway" sent it
        latencies.append(time.time() - decode_telemetry(msg.data)[0])
        await original(msg)

    ingest._on_telemetry = timed  # type: ignore[method-assign]
    await ingest.start()
    conn.send("ready")
    await asyncio.to_thread(conn.recv)  # "report": the load is over
    await asyncio.sleep(0.5)
    conn.send((ingest.stats.heartbeats, latencies))
    await ingest.stop()
    await telemetry.shutdown()


async def paced(args: argparse.Namespace) -> None:
    prefix = f"bp{uuid.uuid4().hex[:8]}"
    subjects = Subjects(prefix)
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=consumer_main, args=(args, prefix, child)
    )
    proc.start()
    assert parent.recv() == "ready"
    consumer = psutil.Process(proc.pid)
    payloads = [heartbeat(i) for i in range(args.workers)]
    bus = NatsBus([args.bus], name="bench-gateway")
    await bus.connect()
    total = int(args.rate * args.seconds)
    cpu0 = sum(consumer.cpu_times()[:2])
    c0, n0 = time.process_time(), nats_cpu()
    start = time.perf_counter()
    for i in range(total):
        w = i % args.workers
        await bus.publish(
            subjects.telemetry(f"bench-{w:05d}"), encode_telemetry(payloads[w], time.time())
        )
        delay = start + (i + 1) / args.rate - time.perf_counter()
        if delay > 0.001:
            await asyncio.sleep(delay)
    await bus.flush()
    c1, n1 = time.process_time(), nats_cpu()
    elapsed = time.perf_counter() - start
    parent.send("report")
    applied, latencies = parent.recv()
    cpu1 = sum(consumer.cpu_times()[:2])
    proc.join(10)
    await bus.close()
    latencies_ms = [1000 * x for x in latencies]
    print(
        f"paced {args.rate:g}/s for {elapsed:.1f} s, {args.workers} workers: master path applied "
        f"{applied}/{total}; master CPU {(cpu1 - cpu0) / total * 1e6:.1f} us/heartbeat "
        f"({100 * (cpu1 - cpu0) / elapsed:.1f} % of a core); publisher "
        f"{(c1 - c0) / total * 1e6:.1f} us/heartbeat; nats-server {(n1 - n0) / total * 1e6:.1f} "
        f"us/heartbeat ({100 * (n1 - n0) / elapsed:.1f} % of a core); bus latency p50 "
        f"{percentile(latencies_ms, 50):.2f} ms, p99 {percentile(latencies_ms, 99):.2f} ms, "
        f"max {max(latencies_ms, default=0):.2f} ms"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bus", default="nats://127.0.0.1:4222")
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--skip-publish", action="store_true")
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if not args.skip_publish:
        asyncio.run(publish_costs(args))
    asyncio.run(paced(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
