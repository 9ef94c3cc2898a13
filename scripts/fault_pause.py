#!/usr/bin/env python3
"""Pause faults at full length: does a stalled master mark its workers inactive or drop its
dashboards? Does a paused worker go inactive when (and only when) it should?

Starts a real master (plaintext, on loopback, its default 30 s inactivity timeout unless
--timeout) and --workers real workers (heartbeat every --interval s, the default 5 s),
connects --dashboards WebSocket clients (default ping/timeout: 54 s/60 s), then:

- master paused (SIGSTOP ... SIGCONT) for each of --master-pauses seconds, --runs times
  each: counts workers shown inactive from the pause on until every worker has been
  heard from again after the resume (plus 3 s, at most 60 s): on the stream
  (``is_active: false``) or, for dashboards the master dropped, by the lowest
  ``active_workers`` of ``/health`` (polled every 0.25 s after the resume); and
  dashboards the master disconnected;
- one worker paused for each of --worker-pauses seconds: whether it went inactive during
  the pause, when, and how soon it was active again after SIGCONT.

Prints a table (``--json``: the rows as JSON too). Takes about 12 minutes with the
defaults (40 workers, 5 runs of 40 s and 60 s, worker pauses of 20 s and 50 s).

``--src DIR``: run the master from another source tree (``DIR/src`` first on its
PYTHONPATH), e.g. a ``git archive`` of an older commit, to compare.

    python scripts/fault_pause.py
    python scripts/fault_pause.py --workers 10 --runs 1 --master-pauses 40 --worker-pauses ''
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from tests.harness import (  # noqa: E402
    Process,
    child_env,
    cloudai_command,
    start_master,
    worker_args,
)


@dataclass
class Dashboard:
    ws: aiohttp.ClientWebSocketResponse
    seen: list[tuple[float, str, bool, str]] = field(default_factory=list)
    closed_at: float | None = None
    close_code: int | None = None
    task: asyncio.Task[None] | None = None

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                now = time.monotonic()
                for worker_id, state in orjson.loads(msg.data).items():
                    self.seen.append(
                        (now, worker_id, bool(state["is_active"]), str(state.get("state", "")))
                    )
        self.closed_at = time.monotonic()
        self.close_code = self.ws.close_code


@dataclass
class Row:
    fault: str
    pause_s: float
    run: int
    false_inactive: int  # workers shown inactive (master pause: all of them are false)
    dashboards_dropped: int
    heard_again_s: float  # after the resume, until every worker was heard from again
    note: str = ""


def start_workers(workdir: Path, ids: list[str], master: str, interval: float) -> list[Process]:
    """Start every worker at once, then wait for their ready files (faster than one by one)."""
    pending = []
    for worker_id in ids:
        ready = workdir / f"worker-{worker_id}.ready.json"
        log_path = workdir / f"worker-{worker_id}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cloudai_command(
                    *worker_args(
                        workdir,
                        worker_id,
                        "--insecure",
                        "--master",
                        master,
                        "--interval",
                        str(interval),
                        "--ready-file",
                        str(ready),
                    )
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
                cwd=workdir,
            )
        pending.append((Process(proc, {}, log_path), ready))
    deadline = time.monotonic() + 120
    for process, ready in pending:
        while not ready.exists():
            if process.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker failed to start:\n{process.log()}")
            time.sleep(0.1)
    return [process for process, _ in pending]


class Bench:
    def __init__(self, master: Process, ids: list[str], dashboards: int) -> None:
        self.master = master
        self.ids = ids
        self.n_dashboards = dashboards
        self.http: aiohttp.ClientSession | None = None
        self.dashboards: list[Dashboard] = []

    async def connect(self) -> None:
        assert self.http is not None
        while len(self.dashboards) < self.n_dashboards:
            ws = await self.http.ws_connect(self.master.extra["ws"] + "/ws/telemetry")
            board = Dashboard(ws)
            board.task = asyncio.ensure_future(board.read())
            self.dashboards.append(board)

    async def reconnect_dropped(self) -> None:
        self.dashboards = [d for d in self.dashboards if d.closed_at is None]
        await self.connect()

    def latest(self) -> dict[str, tuple[bool, str]]:
        latest: dict[str, tuple[bool, str]] = {}
        for _, worker_id, active, state in self.dashboards[0].seen:
            latest[worker_id] = (active, state)
        return latest

    def heard_since(self, since: float) -> set[str]:
        return {w for d in self.dashboards for t, w, _, _ in d.seen if t >= since}

    def inactive_since(self, since: float) -> set[str]:
        return {
            w
            for d in self.dashboards
            for t, w, active, state in d.seen
            if t >= since and (not active or state == "inactive")
        }

    def dropped_since(self, since: float) -> int:
        return sum(1 for d in self.dashboards if d.closed_at is not None and d.closed_at >= since)

    async def wait(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.1)
        return bool(predicate())

    async def all_active(self, timeout: float = 120) -> None:
        def ok() -> bool:
            latest = self.latest()
            return all(latest.get(w, (False, ""))[0] for w in self.ids)

        if not await self.wait(ok, timeout):
            raise SystemExit(f"not every worker is active: {self.latest()}")

    async def poll_active(self, lowest: list[int]) -> None:
        """Keep the lowest ``active_workers`` that /health reports in ``lowest[0]``."""
        assert self.http is not None
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self.http.get(self.master.extra["http"] + "/health") as r:
                    lowest[0] = min(lowest[0], int((await r.json())["active_workers"]))
            await asyncio.sleep(0.25)

    async def master_pause(self, pause: float, run: int) -> Row:
        await self.all_active()
        began = time.monotonic()
        self.master.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(pause)
        finally:
            self.master.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        # /health too: a dashboard the master dropped sees no inactive transition.
        lowest = [len(self.ids)]
        poller = asyncio.ensure_future(self.poll_active(lowest))
        heard = await self.wait(lambda: self.heard_since(resumed) >= set(self.ids), 60)
        heard_after = time.monotonic() - resumed
        await asyncio.sleep(3.0)
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        row = Row(
            "master paused",
            pause,
            run,
            max(len(self.inactive_since(began)), len(self.ids) - lowest[0]),
            self.dropped_since(began),
            round(heard_after, 1),
            "" if heard else "not every worker heard from within 60 s",
        )
        await self.reconnect_dropped()
        return row

    async def worker_pause(self, worker: Process, worker_id: str, pause: float) -> Row:
        await self.all_active()
        began = time.monotonic()
        worker.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(pause)
        finally:
            worker.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        went = [
            t
            for t, w, active, _ in self.dashboards[0].seen
            if w == worker_id and t >= began and not active
        ]
        back = await self.wait(lambda: self.latest().get(worker_id, (False, ""))[0], 60)
        others = self.inactive_since(began) - {worker_id}
        note = (
            f"inactive after {went[0] - began:.1f} s; active {time.monotonic() - resumed:.1f} s"
            " after SIGCONT"
            if went
            else "stayed active"
        )
        if not back:
            note += "; NOT active again within 60 s"
        await asyncio.sleep(1.0)
        return Row(
            "worker paused",
            pause,
            1,
            len(others),  # only the others' inactivity would be false
            self.dropped_since(began),
            round(time.monotonic() - resumed, 1),
            note,
        )


async def measure(
    args: argparse.Namespace, master: Process, workers: list[Process], ids: list[str]
) -> list[Row]:
    rows: list[Row] = []
    bench = Bench(master, ids, args.dashboards)
    async with aiohttp.ClientSession() as http:
        bench.http = http
        await bench.connect()
        await bench.all_active()
        for pause in args.master_pauses:
            for i in range(1, args.runs + 1):
                row = await bench.master_pause(pause, i)
                rows.append(row)
                print(f"  {row}", file=sys.stderr, flush=True)
        for pause in args.worker_pauses:
            row = await bench.worker_pause(workers[0], ids[0], pause)
            rows.append(row)
            print(f"  {row}", file=sys.stderr, flush=True)
        for board in bench.dashboards:
            await board.ws.close()
    return rows


def run(args: argparse.Namespace) -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="fault-pause-"))
    ids = [f"w{i:02d}" for i in range(args.workers)]
    master_args = [a for w in ids for a in ("--allow-worker", w)]
    if args.timeout is not None:
        master_args += ["--inactivity-timeout", str(args.timeout)]
    env = {"PYTHONPATH": str(Path(args.src).resolve() / "src")} if args.src else {}
    master = start_master(workdir, *master_args, **env)
    workers: list[Process] = []
    try:
        workers = start_workers(workdir, ids, master.extra["grpc"], args.interval)
        return asyncio.run(measure(args, master, workers, ids))
    finally:
        for process in [*workers, master]:
            process.send_signal(signal.SIGCONT)
            process.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs in {workdir}", file=sys.stderr)


def table(rows: list[Row]) -> str:
    lines = [
        "| fault | pause | run | false inactive | dashboards dropped | all heard again | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.fault} | {r.pause_s:g} s | {r.run} | {r.false_inactive} | "
            f"{r.dashboards_dropped} | {r.heard_again_s:g} s | {r.note} |"
        )
    return "\n".join(lines)


def seconds_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=40)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--master-pauses", type=seconds_list, default=[40.0, 60.0])
    p.add_argument("--worker-pauses", type=seconds_list, default=[20.0, 50.0])
    p.add_argument("--interval", type=float, default=5.0, help="worker heartbeat interval")
    p.add_argument("--timeout", type=float, help="master --inactivity-timeout (default: its own)")
    p.add_argument("--dashboards", type=int, default=3)
    p.add_argument("--src", help="run the master from this source tree (DIR/src)")
    p.add_argument("--keep", action="store_true", help="keep the logs")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    began = time.monotonic()
    rows = run(args)
    print(table(rows))
    master_rows = [r for r in rows if r.fault == "master paused"]
    clean = sum(1 for r in master_rows if r.false_inactive == 0 and r.dashboards_dropped == 0)
    print(
        f"\nmaster pauses without a false inactive or a dropped dashboard: "
        f"{clean}/{len(master_rows)}; {args.workers} workers, {args.dashboards} dashboards, "
        f"{time.monotonic() - began:.0f} s in all"
    )
    if args.json:
        print(json.dumps([asdict(r) for r in rows]))
    with contextlib.suppress(Exception):
        sys.stdout.flush()


if __name__ == "__main__":
    main()
