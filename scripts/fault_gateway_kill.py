#!/usr/bin/env python3
"""A gateway SIGKILLed under load: how fast do its workers reconnect to the other one,
and does the master mark anyone inactive? (docs/SCALING.md)

Starts a real master (``--insecure --bus``, inactivity timeout ``--timeout``, 30 s by
default), two `cloudai gateway` processes sharing one gRPC port (SO_REUSEPORT) and
``--processes`` processes of simulated unary workers (grpc.aio, one connection per
worker, registered through the gateways, a heartbeat every ``--interval`` s with their
phases spread; a failed call is retried 0.1 s later, registering again on NOT_FOUND).
After ``--kill-after`` s of load it SIGKILLs the first gateway, keeps the load going and
polls the master's ``/health`` every 0.25 s for ``--timeout`` + 5 s. Then it reports,
for the workers the killed gateway had registered: the time from the kill to each one's
first acknowledged heartbeat (a heartbeat due up to one interval after the kill is
included), the longest silence of any worker, failed calls, and the most workers the
master ever had inactive or suspect. CPU of each process over the 5 s before the kill.

    python scripts/fault_gateway_kill.py --workers 1000 --interval 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psutil


def cloudai(*args: str) -> list[str]:
    return [sys.executable, "-m", "cloudai", *args]


def spawn(
    workdir: Path, name: str, args: list[str], env: dict[str, str]
) -> tuple[Any, dict[str, Any]]:
    ready = workdir / f"{name}.json"
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        cloudai(*args, "--ready-file", str(ready)), stdout=log, stderr=log, env=env
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{name} did not start (see {workdir / name}.log)")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def generator_main(ids: list[str], target: str, interval: float, conn: Any) -> None:
    from cloudai.loop import event_loop_factory

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(generate(ids, target, interval, conn))


async def generate(ids: list[str], target: str, interval: float, conn: Any) -> None:
    import grpc

    from cloudai.proto import pb, rpc

    acked: dict[str, list[float]] = {w: [] for w in ids}
    failed: dict[str, list[float]] = {w: [] for w in ids}
    registered = asyncio.Event()
    pending = len(ids)
    stop = asyncio.Event()

    async def worker(worker_id: str, phase: float) -> None:
        nonlocal pending
        options = [
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", 100),
        ]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = rpc.MasterWorkerStub(channel)
            heartbeat = pb.Heartbeat(worker_id=worker_id, cpu_usage=5.0, memory_usage=20.0)
            info = pb.WorkerInfo(worker_id=worker_id, total_cpu=1, total_memory=1)
            session = first = False
            await asyncio.sleep(phase)
            while not stop.is_set():
                try:
                    if not session:
                        session = (await stub.RegisterWorker(info, timeout=5)).success
                        if session and not first:
                            first = True
                            pending -= 1
                            if not pending:
                                registered.set()
                    await stub.SendHeartbeat(heartbeat, timeout=5)
                    acked[worker_id].append(time.monotonic())
                    delay = interval
                except grpc.aio.AioRpcError as exc:
                    failed[worker_id].append(time.monotonic())
                    session = session and exc.code() != grpc.StatusCode.NOT_FOUND
                    delay = 0.1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    tasks = [asyncio.ensure_future(worker(w, interval * i / len(ids))) for i, w in enumerate(ids)]
    await registered.wait()
    conn.send("ready")
    await asyncio.to_thread(conn.recv)  # "stop"
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send((acked, failed))


def cpu(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return float(times.user + times.system)


def health(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{http}/health", timeout=5) as response:
        return dict(json.loads(response.read()))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--timeout", type=float, default=30.0, help="the master's inactivity timeout")
    p.add_argument("--kill-after", type=float, default=10.0)
    p.add_argument("--bus", default="nats://127.0.0.1:4222")
    args = p.parse_args()
    ids = [f"sim-{i:05d}" for i in range(args.workers)]
    env = {**os.environ, "CLOUDAI_BUS_PREFIX": f"k{uuid.uuid4().hex[:10]}"}
    procs: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="cloudai-gw-kill-") as tmp:
        workdir = Path(tmp)
        (workdir / "allowed.txt").write_text("\n".join(ids) + "\n")
        try:
            master, m = spawn(workdir, "master", [
                "master", "--insecure", "--grpc-port", "0", "--http-port", "0", "--host",
                "127.0.0.1", "--no-cli", "--data-dir", str(workdir / "data"), "--bus", args.bus,
                "--allow-workers-file", str(workdir / "allowed.txt"),
                "--inactivity-timeout", str(args.timeout),
            ], env)  # fmt: skip
            procs.append(master)
            http = f"127.0.0.1:{m['http_port']}"
            gateways = []
            port = 0
            for g in range(2):
                proc, ready = spawn(workdir, f"g{g}", [
                    "gateway", "--insecure", "--id", f"g{g}", "--bus", args.bus, "--host",
                    "127.0.0.1", "--grpc-port", str(port),
                ], env)  # fmt: skip
                procs.append(proc)
                gateways.append(proc)
                port = int(ready["grpc_port"])
            target = f"127.0.0.1:{port}"
            context = multiprocessing.get_context("spawn")
            children = []
            for k in range(args.processes):
                parent, child = context.Pipe()
                gen = context.Process(
                    target=generator_main,
                    args=(ids[k :: args.processes], target, args.interval, child),
                )
                gen.start()
                children.append((gen, parent))
            for _gen, parent in children:
                if not parent.poll(120):
                    raise SystemExit("the simulated workers did not all register in 120 s")
                parent.recv()
            watched = {"master": master.pid, "g0": gateways[0].pid, "g1": gateways[1].pid}
            watched.update({f"generator-{k}": gen.pid for k, (gen, _) in enumerate(children)})
            nats = next(
                (q.pid for q in psutil.process_iter(["name"]) if q.info["name"] == "nats-server"),
                None,
            )
            if nats is not None:
                watched["nats-server"] = nats
            time.sleep(max(0.0, args.kill_after - 5))
            before = {name: cpu(pid) for name, pid in watched.items()}
            time.sleep(5)
            after = {name: cpu(pid) for name, pid in watched.items()}
            load = os.getloadavg()[0]
            killed_at = time.monotonic()
            gateways[0].send_signal(signal.SIGKILL)
            gateways[0].wait()
            worst_inactive = worst_suspect = 0
            lowest_active = args.workers
            watch_until = time.monotonic() + args.timeout + 5
            while time.monotonic() < watch_until:
                state = health(http)
                worst_inactive = max(worst_inactive, state["inactive_workers"])
                worst_suspect = max(worst_suspect, state["suspect_workers"])
                lowest_active = min(lowest_active, state["active_workers"])
                time.sleep(0.25)
            acked: dict[str, list[float]] = {}
            failed: dict[str, list[float]] = {}
            for gen, parent in children:
                parent.send("stop")
                a, f = parent.recv()
                acked.update(a)
                failed.update(f)
                gen.join(30)
            log = (workdir / "master.log").read_text()
            on_g0 = set(re.findall(r"worker (\S+) registered \(gateway g0 ", log))
            moved = [w for w in ids if w in on_g0]
            reconnect = [
                min((t for t in acked[w] if t >= killed_at), default=float("inf")) - killed_at
                for w in moved
            ]
            gaps = []
            for w in ids:
                times = acked[w]
                gaps += [
                    b - a
                    for a, b in itertools.pairwise(times)
                    if b >= killed_at and a <= killed_at + args.interval
                ]
            failures = sum(1 for w in ids for t in failed[w] if t >= killed_at)
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    cpu_pct = {name: round(100 * (after[name] - before[name]) / 5, 1) for name in watched}
    print(
        json.dumps(
            {
                "workers": args.workers,
                "interval_s": args.interval,
                "offered_rate": args.workers / args.interval,
                "inactivity_timeout_s": args.timeout,
                "load_average_at_kill": round(load, 1),
                "cpu_pct_5s_before_kill": cpu_pct,
                "workers_on_killed_gateway": len(moved),
                "reconnect_s": {
                    "p50": round(percentile(reconnect, 50), 3),
                    "p99": round(percentile(reconnect, 99), 3),
                    "max": round(max(reconnect, default=float("nan")), 3),
                },
                "longest_silence_s": round(max(gaps, default=float("nan")), 3),
                "failed_calls_after_kill": failures,
                "master_max_inactive": worst_inactive,
                "master_max_suspect": worst_suspect,
                "master_min_active": lowest_active,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
