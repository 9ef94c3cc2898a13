"""The worker agent's own cost: one real worker agent (the ``worker`` command)
heartbeating into a fresh master at its normal interval, its CPU (children included)
and RSS over a window."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from cloudai.bench.local_master import LocalMaster
from cloudai.bench.report import machine, versions

WORKER_ID = "bench-agent"


def _cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def measure_agent(seconds: float, interval: float = 5.0, warmup: float = 15.0) -> dict[str, Any]:
    """Start a master and one worker (``--master``), wait ``warmup``, measure ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="cloudai-agent-") as tmp:
        workdir = Path(tmp)
        master = LocalMaster(workdir, [WORKER_ID])
        master.start()
        ready = workdir / "worker.ready.json"
        env = dict(os.environ)
        env.pop("GRPC_PORT", None)
        command = [
            sys.executable,
            "-m",
            "cloudai",
            "--log-level",
            "WARNING",
            "worker",
            "--insecure",  # the bench's master runs --insecure
            "--id",
            WORKER_ID,
            "--master",
            master.grpc,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--interval",
            str(interval),
            "--no-docker",
            "--work-dir",
            str(workdir / "worker"),
            "--ready-file",
            str(ready),
        ]
        with open(workdir / "worker.log", "ab") as log:
            worker = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start: {_tail(workdir / 'worker.log')}")
                time.sleep(0.1)
            process = psutil.Process(worker.pid)
            time.sleep(warmup)
            rss_start = process.memory_info().rss
            beats0 = _heartbeats(master)
            cpu0, t0 = _cpu_seconds(process), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = _cpu_seconds(process), time.monotonic()
            beats = _heartbeats(master) - beats0
            rss_end = process.memory_info().rss
            status = json.loads(ready.read_text())
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(20)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            master.stop()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "measure": "worker agent",
        "interval_s": interval,
        "window_s": round(t1 - t0, 1),
        "cpu_pct_of_one_core": round(100.0 * (cpu1 - cpu0) / (t1 - t0), 3),
        "heartbeats_received_by_master": beats,
        "cpu_ms_per_heartbeat": round(1000.0 * (cpu1 - cpu0) / max(1, beats), 2),
        "rss_mb": {"start": round(rss_start / 2**20, 1), "end": round(rss_end / 2**20, 1)},
        "worker_pid": status.get("pid"),
        "versions": versions(),
        "machine": machine(),
    }


def _heartbeats(master: LocalMaster) -> int:
    """The master's heartbeat counter (admin API, loopback)."""
    url = f"http://127.0.0.1:{master.ready['http_port']}/api/status"
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(json.load(response)["heartbeats"])


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""
