#!/usr/bin/env python3
"""Gateways and the bus under `cloudai bench` (docs/SCALING.md).

For each setup and rate, fresh processes: ``direct`` is one `cloudai master --insecure`
(no bus) that the bench's workers talk to; ``gateways`` is a master with ``--bus``, N
`cloudai gateway` processes sharing one gRPC port (SO_REUSEPORT) and the NATS server
(already running, not restarted). The bench (``--grpc``, ``--ws-url``, ``--master-pid``)
drives the load; its WebSocket clients are on the master, or with ``--ws-on gateway`` on
a gateway. This script adds the CPU of every other process (each gateway, nats-server)
over the bench's load window, read from the bench's own "load:" line.

``--kill-gateway-after S`` (gateways setup): SIGKILL the first gateway S seconds into the
load and report how the generator's workers fared (the bench's errors and connects) and
how many workers the master had inactive afterwards (``/health`` polled for the
inactivity timeout + 5 s after the kill).

    python scripts/bench_gateways.py --setups direct,gateways --rates 2000,4000 --clients 3
    python scripts/bench_gateways.py --setups gateways --rates 2000 --kill-gateway-after 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psutil

PYTHON = sys.executable
START_DELAY = 0.5  # the bench starts its load this long after printing "load:"


def cloudai(*args: str) -> list[str]:
    return [PYTHON, "-m", "cloudai", *args]


def wait_ready(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        if proc.poll() is not None:
            raise SystemExit(f"{path.stem} exited with {proc.returncode}")
        time.sleep(0.05)
    raise SystemExit(f"{path.stem} not ready after {timeout} s")


class Cluster:
    def __init__(self, workdir: Path, args: argparse.Namespace, setup: str) -> None:
        self.workdir, self.args, self.setup = workdir, args, setup
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "CLOUDAI_BUS_PREFIX": f"b{uuid.uuid4().hex[:10]}"}
        self.env.pop("GRPC_PORT", None)
        self.env.pop("HTTP_PORT", None)

    def spawn(self, name: str, args: list[str]) -> dict[str, Any]:
        ready = self.workdir / f"{name}.json"
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            cloudai(*args, "--ready-file", str(ready)), stdout=log, stderr=log, env=self.env
        )
        self.procs.append(proc)
        return wait_ready(ready, proc)

    def start(self) -> None:
        args = self.args
        allowed = self.workdir / "allowed.txt"
        allowed.write_text("".join(f"{args.worker_prefix}{i:05d}\n" for i in range(args.workers)))
        master_args = ["master", "--insecure", "--grpc-port", "0", "--http-port", "0"]
        master_args += ["--host", "127.0.0.1", "--no-cli", "--data-dir", str(self.workdir / "data")]
        master_args += ["--allow-workers-file", str(allowed)]
        master_args += ["--inactivity-timeout", str(args.inactivity_timeout)]
        if self.setup == "gateways":
            master_args += ["--bus", args.bus]
        master = self.spawn("master", master_args)
        self.master_pid = int(master["pid"])
        self.grpc = f"127.0.0.1:{master['grpc_port']}"
        self.http = f"127.0.0.1:{master['http_port']}"
        self.ws = f"ws://{self.http}/ws/telemetry"
        self.gateway_pids: list[int] = []
        if self.setup != "gateways":
            return
        port = 0
        for g in range(args.gateways):
            gateway_args = ["gateway", "--insecure", "--id", f"g{g}", "--bus", args.bus]
            gateway_args += ["--host", "127.0.0.1", "--grpc-port", str(port)]
            if args.ws_on == "gateway" and g == args.gateways - 1:
                gateway_args += ["--ws-port", "0"]
            ready = self.spawn(f"gateway-{g}", gateway_args)
            port = int(ready["grpc_port"])
            self.gateway_pids.append(int(ready["pid"]))
            if ready.get("http_port"):
                self.ws = f"ws://127.0.0.1:{ready['http_port']}/ws/telemetry"
        self.grpc = f"127.0.0.1:{port}"

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def nats_pid() -> int | None:
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "nats-server":
            return int(proc.pid)
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def rss_mb(pid: int) -> float | None:
    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except psutil.Error:
        return None


def health(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{http}/health", timeout=5) as response:
        return dict(json.loads(response.read()))


def run_point(cluster: Cluster, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    out = cluster.workdir / f"bench-{rate:g}.jsonl"
    bench = cloudai(
        "bench", "--grpc", cluster.grpc, "--master-pid", str(cluster.master_pid),
        "--ws-url", cluster.ws, "--workers", str(args.workers), "--rate", f"{rate:g}",
        "--duration", f"{args.duration:g}", "--clients", str(args.clients),
        "--mode", args.mode, "--generators", str(args.generators),
        "--label", f"{cluster.setup} ws-on-{args.ws_on}", "--json-out", str(out),
    )  # fmt: skip
    others = {f"gateway-{i}": pid for i, pid in enumerate(cluster.gateway_pids)}
    nats = nats_pid() if cluster.setup == "gateways" else None
    if nats is not None:
        others["nats-server"] = nats
    proc = subprocess.Popen(bench, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    window: dict[str, float] = {}
    before: dict[str, float | None] = {}
    after: dict[str, float | None] = {}
    rss: dict[str, float | None] = {}
    kill: dict[str, Any] = {}

    def sample_window(start: float) -> None:
        time.sleep(max(0.0, start - time.monotonic()))
        before.update({name: cpu_seconds(pid) for name, pid in others.items()})
        window["start"] = time.monotonic()
        if args.kill_gateway_after is not None and cluster.gateway_pids:
            time.sleep(args.kill_gateway_after)
            os.kill(cluster.gateway_pids[0], signal.SIGKILL)
            kill["at_s"] = args.kill_gateway_after
            after["gateway-0"] = before["gateway-0"]  # dead: its CPU up to the kill is lost
        time.sleep(max(0.0, window["start"] + args.duration - time.monotonic()))
        for name, pid in others.items():
            if name not in after:
                after[name] = cpu_seconds(pid)
            rss[name] = rss_mb(pid)  # at the end of the load

    sampler: threading.Thread | None = None
    for line in proc.stderr:
        if args.verbose:
            sys.stderr.write(line)
        if line.removeprefix("[bench] ").startswith("load:") and sampler is None:
            sampler = threading.Thread(
                target=sample_window, args=(time.monotonic() + START_DELAY,), daemon=True
            )
            sampler.start()
    proc.wait()
    if sampler is not None:
        sampler.join()
    record: dict[str, Any] = json.loads(out.read_text().splitlines()[-1])
    record["setup"] = cluster.setup
    record["other_processes_cpu_pct"] = {
        name: round(100 * (after[name] - before[name]) / args.duration, 1)  # type: ignore[operator]
        for name in others
        if before.get(name) is not None and after.get(name) is not None
    }
    record["other_processes_rss_mb"] = {n: v for n, v in rss.items() if v is not None}
    if record.get("other_cpu_pct") is not None:
        # The bench counts gateways and nats-server as "other": take them out.
        ours = sum(record["other_processes_cpu_pct"].values())
        record["other_jobs_cpu_pct"] = round(max(0.0, record["other_cpu_pct"] - ours), 1)
    if kill:
        # Watch the master for the inactivity timeout + 5 s after the load.
        worst = 0
        deadline = time.monotonic() + args.inactivity_timeout + 5
        while time.monotonic() < deadline:
            state = health(cluster.http)
            worst = max(worst, state["inactive_workers"])
            time.sleep(0.25)
        kill["max_inactive_workers"] = worst
        record["gateway_kill"] = kill
    return record


def summary(record: dict[str, Any]) -> str:
    rpc = record.get("rpc_ms") or {}
    ws = (record.get("ws") or {}).get("hb_to_client_ms") or {}
    master = (record.get("master") or {}).get("cpu_pct")
    bench = record.get("bench_cpu_pct") or {}
    return (
        f"{record['setup']:9} {record['offered_rate']:>6g}/s achieved {record['achieved_rate']:>8}"
        f" lost {record['lost']:>5} errors {record['errors']:>4}"
        f" rpc p50/p99 {rpc.get('p50', '-')}/{rpc.get('p99', '-')} ms"
        f" hb->client p50/p99 {ws.get('p50', '-')}/{ws.get('p99', '-')} ms"
        f" | CPU% master {master} {record['other_processes_cpu_pct']}"
        f" bench {bench} other jobs {record.get('other_jobs_cpu_pct')}"
        + (f" | kill {record['gateway_kill']}" if "gateway_kill" in record else "")
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setups", default="direct,gateways")
    p.add_argument("--rates", default="2000")
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--mode", default="unary")
    p.add_argument("--generators", type=int, default=2)
    p.add_argument("--gateways", type=int, default=2)
    p.add_argument("--ws-on", choices=("master", "gateway"), default="master")
    p.add_argument("--bus", default="nats://127.0.0.1:4222")
    p.add_argument("--inactivity-timeout", type=float, default=30.0)
    p.add_argument("--kill-gateway-after", type=float)
    p.add_argument("--worker-prefix", default="bench-")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    for rate in [float(r) for r in args.rates.split(",")]:
        for setup in args.setups.split(","):
            with tempfile.TemporaryDirectory(prefix="cloudai-gw-bench-") as tmp:
                cluster = Cluster(Path(tmp), args, setup)
                try:
                    cluster.start()
                    record = run_point(cluster, args, rate)
                finally:
                    cluster.stop()
            print(summary(record), flush=True)
            if args.json_out is not None:
                with args.json_out.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
