#!/usr/bin/env python3
"""Task submissions and results per second through a real master, with write-ahead.

Starts a real ``cloudai master --insecure`` (SQLite in a fresh data dir, or a fresh
PostgreSQL database that is dropped afterwards), and a fake worker in this process: a
gRPC server that answers AssignTask at once and registers itself with the master (it
sends a heartbeat every second). For each concurrency level:

- submissions: ``--tasks`` POST /api/tasks from that many concurrent HTTP clients (each
  answer means: the task is stored, AssignTask answered, its outcome stored);
- results: one ReportTaskCompletion per task just submitted, from that many concurrent
  gRPC callers on one channel (each success=true means: the result is stored).

Modes (``--mode``): ``group`` (default: group commit), ``single`` (one transaction per
operation; the master is started with ``MasterPersistence(group_commit=False)``). With
``--master-pythonpath DIR`` the master runs the code under DIR (e.g. an older tree, for a
before/after comparison; ``--mode`` is then ignored if that code has no switch).

One JSON line per (phase, concurrency) is printed and, with ``--out``, appended to a file
as it is measured. A last line, phase ``stop``, says how long the master took to stop
after SIGTERM: a master that answers before it stores (write-behind) writes its backlog
then, so that time is what a crash at the end of the run would have lost.

    .venv/bin/python scripts/bench_write_ahead.py --backend sqlite --concurrency 1,8,32
    .venv/bin/python scripts/bench_write_ahead.py --backend postgresql \\
        --pg-url postgresql://postgres@127.0.0.1:5432/postgres --out docs/perf/write-ahead/x.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import psutil

from cloudai.proto import pb, rpc

WORKER_ID = "bench-w1"

BOOT = """
import os, sys
import cloudai.master.persistence as persistence
if os.environ.get("BENCH_COMMIT_MODE") == "single" and hasattr(persistence, "StoreJournal"):
    original = persistence.MasterPersistence.__init__
    def init(self, store, **kw):
        kw["group_commit"] = False
        original(self, store, **kw)
    persistence.MasterPersistence.__init__ = init
from cloudai.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


class FakeWorker(rpc.MasterWorkerServicer):
    """Accepts every task at once; runs nothing."""

    def __init__(self) -> None:
        self.assigned = 0

    async def AssignTask(self, request: pb.Task, context: object) -> pb.TaskAck:
        self.assigned += 1
        return pb.TaskAck(success=True, message="accepted")

    async def CancelTask(self, request: pb.TaskID, context: object) -> pb.TaskAck:
        return pb.TaskAck(success=True, message="cancelling")

    async def MasterRegister(self, request: pb.MasterInfo, context: object) -> pb.RegisterAck:
        return pb.RegisterAck(success=True, message="ok")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def create_pg_database(server_url: str) -> tuple[str, str]:
    import psycopg

    name = f"cloudai_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = server_url.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def drop_pg_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_master(
    workdir: Path, database_url: str | None, mode: str, pythonpath: str | None
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    ready = workdir / "master.ready.json"
    args = [
        sys.executable,
        "-c",
        BOOT,
        "master",
        "--insecure",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--host",
        "127.0.0.1",
        "--no-cli",
        "--data-dir",
        str(workdir / "data"),
        "--allow-worker",
        WORKER_ID,
        "--ready-file",
        str(ready),
    ]
    if database_url:
        args += ["--database-url", database_url]
    env = dict(os.environ, BENCH_COMMIT_MODE=mode, PYTHONUNBUFFERED="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    log = open(workdir / "master.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the master did not start: see {workdir / 'master.log'}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


async def heartbeats(stub: rpc.MasterWorkerStub) -> None:
    while True:
        await stub.SendHeartbeat(pb.Heartbeat(worker_id=WORKER_ID, cpu_usage=1.0))
        await asyncio.sleep(1.0)


async def submit_all(http: str, ids: list[str], concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    queue = iter(ids)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=http, connector=connector) as session:

        async def client() -> None:
            nonlocal failures
            for task_id in queue:
                body = {"worker_id": WORKER_ID, "task_id": task_id, "command": "echo 1"}
                began = time.perf_counter()
                async with session.post("/api/tasks", json=body) as response:
                    await response.read()
                    if response.status != 201:
                        failures += 1
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return time.perf_counter() - began, latencies, failures


async def report_all(
    stub: rpc.MasterWorkerStub, ids: list[str], concurrency: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    queue = iter(ids)

    async def caller() -> None:
        nonlocal failures
        for task_id in queue:
            result = pb.TaskResult(
                task_id=task_id, worker_id=WORKER_ID, status="success", logs="1\n", exit_code=0
            )
            began = time.perf_counter()
            ack = await stub.ReportTaskCompletion(result, timeout=30)
            latencies.append(time.perf_counter() - began)
            if not ack.success:
                failures += 1

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return time.perf_counter() - began, latencies, failures


def line(
    base: dict[str, Any],
    phase: str,
    concurrency: int,
    elapsed: float,
    latencies: list[float],
    failures: int,
    cpu: float,
    own_cpu: float,
) -> dict[str, Any]:
    return {
        **base,
        "phase": phase,
        "concurrency": concurrency,
        "ops": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 3),
        "per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "master_cpu_percent": round(cpu, 1),
        "bench_cpu_percent": round(own_cpu, 1),
    }


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def emit(record: dict[str, Any], out: Path | None) -> None:
    print(json.dumps(record), flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")


async def run(args: argparse.Namespace) -> None:
    server = grpc.aio.server()
    rpc.add_MasterWorkerServicer_to_server(FakeWorker(), server)
    worker_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    pg_name = None
    database_url = None
    if args.backend == "postgresql":
        pg_name, database_url = create_pg_database(args.pg_url)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-write-ahead-") as tmp:
            proc, ready = start_master(Path(tmp), database_url, args.mode, args.master_pythonpath)
            master, me = psutil.Process(proc.pid), psutil.Process()
            try:
                http = f"http://127.0.0.1:{ready['http_port']}"
                async with grpc.aio.insecure_channel(f"127.0.0.1:{ready['grpc_port']}") as channel:
                    stub = rpc.MasterWorkerStub(channel)
                    info = pb.WorkerInfo(
                        worker_id=WORKER_ID, worker_ip=f"127.0.0.1:{worker_port}", total_cpu=64
                    )
                    ack = await stub.RegisterWorker(info)
                    assert ack.success, ack.message
                    beating = asyncio.ensure_future(heartbeats(stub))
                    base = {
                        "label": args.label,
                        "backend": args.backend,
                        "mode": args.mode,
                        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
                    }
                    # Warm-up: connections, code paths, the first pages of the tables.
                    warm = [f"warm-{i}" for i in range(200)]
                    await submit_all(http, warm, 8)
                    await report_all(stub, warm, 8)
                    for concurrency in args.concurrency:
                        ids = [f"c{concurrency}-{i}" for i in range(args.tasks)]
                        for phase in ("submissions", "results"):
                            cpu, own = cpu_seconds(master), cpu_seconds(me)
                            if phase == "submissions":
                                elapsed, latencies, failures = await submit_all(
                                    http, ids, concurrency
                                )
                            else:
                                elapsed, latencies, failures = await report_all(
                                    stub, ids, concurrency
                                )
                            used = (cpu_seconds(master) - cpu) / elapsed * 100
                            own = (cpu_seconds(me) - own) / elapsed * 100
                            record = line(
                                base, phase, concurrency, elapsed, latencies, failures, used, own
                            )
                            emit(record, args.out)
                    beating.cancel()
                stopping = time.perf_counter()
                proc.terminate()
                proc.wait(300)
                stop = {**base, "phase": "stop", "seconds": time.perf_counter() - stopping}
                emit({**stop, "seconds": round(stop["seconds"], 3)}, args.out)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        await server.stop(None)
        if pg_name is not None:
            drop_pg_database(args.pg_url, pg_name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a server's maintenance database: the bench creates and drops its own",
    )
    parser.add_argument("--mode", choices=["group", "single"], default="group")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[1, 8, 32],
    )
    parser.add_argument("--tasks", type=int, default=1000, help="per concurrency level")
    parser.add_argument("--label", default="write-ahead")
    parser.add_argument("--master-pythonpath", help="run the master on the code under this dir")
    parser.add_argument("--out", type=Path, help="append the JSON lines to this file")
    args = parser.parse_args()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
