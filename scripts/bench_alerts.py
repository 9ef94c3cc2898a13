#!/usr/bin/env python3
"""What alert rules cost per heartbeat, and what that means for a master at 10,000
workers (2,000 heartbeats/s).

Builds a ``TelemetryManager`` (not started: each heartbeat is applied inline, subscribers
included) with ``--workers`` registered workers, then times ``--heartbeats`` heartbeats
(``process_heartbeat``: conversion, liveness, publishing) twice: without alerts, and with
an ``AlertService`` listening that has ``--rules`` threshold rules on every worker (five
metrics, thresholds spread from 90 to 99; ``--breach`` of the heartbeats carry values
over them, so alerts go pending, fire and resolve). Also the periodic tick (1 s) with
the alerts that result. Process CPU time, best of ``--repeat``.

    .venv/bin/python scripts/bench_alerts.py --workers 10000 --rules 20 \\
        | tee -a docs/perf/alerts.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from typing import Any

from cloudai.alerts.manager import AlertService
from cloudai.proto import pb
from cloudai.telemetry.manager import TelemetryManager

METRICS = ("cpu_usage", "memory_usage", "storage_usage", "gpu_usage", "running_tasks")


def rules_toml(count: int) -> str:
    out = []
    for i in range(count):
        metric = METRICS[i % len(METRICS)]
        threshold = 90 + (i % 10) if metric != "running_tasks" else 8 + i
        out.append(
            f'[[rule]]\nname = "r{i}"\nmetric = "{metric}"\nthreshold = {threshold}\n'
            f'for = "30s"\nresolve_threshold = {threshold - 5}\n'
        )
    return "\n".join(out)


def heartbeats(workers: int, count: int, breach: float, seed: int = 1) -> list[pb.Heartbeat]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        high = rng.random() < breach
        low, top = (90.0, 100.0) if high else (0.0, 80.0)
        out.append(
            pb.Heartbeat(
                worker_id=f"w{n % workers:05d}",
                cpu_usage=rng.uniform(low, top),
                memory_usage=rng.uniform(low, top),
                storage_usage=rng.uniform(0.0, 80.0),
                gpu_usage=rng.uniform(low, top),
                running_tasks=[pb.RunningTask(task_id="t1", cpu_allocated=1.0)],
            )
        )
    return out


def cpu_time(fn: Any) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def run(args: argparse.Namespace, with_alerts: bool, beats: list[pb.Heartbeat]) -> dict[str, Any]:
    clock = [1_000_000.0]
    manager = TelemetryManager(30.0, clock=lambda: clock[0], wall_clock=lambda: clock[0])
    for n in range(args.workers):
        manager.register_worker(f"w{n:05d}")
    service = None
    if with_alerts:
        import pathlib
        import tempfile

        path = pathlib.Path(tempfile.mkdtemp()) / "rules.toml"
        path.write_text(rules_toml(args.rules))
        service = AlertService(None, rules_file=path, clock=lambda: clock[0], webhook_senders=[])
        service._file_rules = service._read_rules_file()  # load() without an event loop
        service._apply_rules()
        service.attach(manager)
    # warm up: every worker seen once
    for hb in beats[: args.workers]:
        manager.process_heartbeat(hb)
    best = float("inf")
    tick = 0.0
    for _ in range(args.repeat):

        def apply() -> None:
            for i, hb in enumerate(beats):
                if i % 2000 == 0:
                    clock[0] += 1.0  # 2,000 heartbeats a second
                manager.process_heartbeat(hb)

        best = min(best, cpu_time(apply))
        if service is not None:
            tick = cpu_time(service.tick)
    result: dict[str, Any] = {
        "alerts": with_alerts,
        "us_per_heartbeat": round(best / len(beats) * 1e6, 3),
    }
    if service is not None:
        counts: dict[str, int] = {}
        for (_, state), n in service.state_counts().items():
            counts[state] = counts.get(state, 0) + n
        result["alert_states"] = counts
        result["tick_ms"] = round(tick * 1000, 3)
        result["transitions"] = service.stats.transitions
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--heartbeats", type=int, default=100_000)
    parser.add_argument("--breach", type=float, default=0.05)
    parser.add_argument("--rate", type=float, default=2000.0, help="heartbeats/s at the master")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    beats = heartbeats(args.workers, args.heartbeats, args.breach)
    off = run(args, False, beats)
    on = run(args, True, beats)
    extra_us = on["us_per_heartbeat"] - off["us_per_heartbeat"]
    record = {
        "bench": "alerts",
        "workers": args.workers,
        "rules": args.rules,
        "heartbeats": args.heartbeats,
        "breach": args.breach,
        "off": off,
        "on": on,
        "extra_us_per_heartbeat": round(extra_us, 3),
        # percent of one core at --rate heartbeats/s, plus one tick a second
        "extra_core_pct": round((extra_us * args.rate + on.get("tick_ms", 0) * 1000) / 1e4, 3),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "time": int(time.time()),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
