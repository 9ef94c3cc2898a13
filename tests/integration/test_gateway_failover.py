"""Gateways and the bus with real processes: a master with --bus, two `cloudai gateway`
processes sharing one gRPC port (SO_REUSEPORT), the real NATS server, our streaming
workers, a unary worker that speaks like the Go worker, and simulated unary workers.

Telemetry reaches WebSocket clients on the master and on a gateway with the same JSON;
a gateway SIGKILLed under load: its workers reconnect to the other one within two
heartbeat intervals, and the master marks no worker inactive.

NATS unreachable: skipped, or failed when CI is set (.ci/run starts it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from cloudai.proto import pb, rpc
from tests.bus_harness import start_gateway
from tests.harness import (
    REPO,
    async_wait_until,
    child_env,
    start_master,
    start_worker,
)

INTERVAL = 1.0  # our workers' heartbeat interval in these tests
SIMULATED = 40  # unary workers simulated in this process, one connection each
WAIT = 30.0

pytestmark = pytest.mark.integration


class GoLikeWorker:
    """tests/go_like_worker.py: unary heartbeats, registers with an empty worker_ip, learns
    its master (here: the gateways' shared address) only from MasterRegister."""

    def __init__(self, worker_id: str, workdir: Path) -> None:
        self.log = open(workdir / f"go-{worker_id}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.go_like_worker", worker_id],
            cwd=REPO,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline())
        self.address = first["listening"]

    async def announce(self, master_address: str) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            ack = await rpc.MasterWorkerStub(channel).MasterRegister(
                pb.MasterInfo(master_id="test", master_address=master_address), timeout=5
            )
        assert ack.success

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class Dashboard:
    """A /ws/telemetry client that keeps every worker's latest entry and, per worker,
    when each update arrived and whether it ever showed is_active false."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latest: dict[str, dict[str, Any]] = {}
        self.arrivals: dict[str, list[float]] = {}
        self.inactive: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Dashboard:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url + "/ws/telemetry")
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await self._ws.close()
        await self._session.close()

    async def _read(self) -> None:
        async for message in self._ws:
            now = time.monotonic()
            for worker_id, entry in json.loads(message.data).items():
                self.latest[worker_id] = entry
                if entry.get("last_update"):
                    self.arrivals.setdefault(worker_id, []).append(now)
                if entry.get("is_active") is False:
                    self.inactive.add(worker_id)

    def active(self, worker_ids: list[str]) -> bool:
        return all(
            self.latest.get(w, {}).get("is_active") and self.latest[w].get("memory_usage")
            for w in worker_ids
        )


class SimulatedWorker:
    """A unary worker on its own connection: RegisterWorker, then SendHeartbeat every
    INTERVAL; after a failure it retries 0.1 s later (registering again on NOT_FOUND).
    Records when each heartbeat was acknowledged and when one failed. (A connection that
    broke between two calls is reopened by gRPC at the next one: no call fails.)"""

    def __init__(self, worker_id: str, target: str) -> None:
        self.worker_id = worker_id
        self.target = target
        self.acked: list[float] = []
        self.failed: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        options = [
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", 100),
        ]
        async with grpc.aio.insecure_channel(self.target, options=options) as channel:
            stub = rpc.MasterWorkerStub(channel)
            registered = False
            heartbeat = pb.Heartbeat(worker_id=self.worker_id, cpu_usage=5.0, memory_usage=20.0)
            while not stop.is_set():
                try:
                    if not registered:
                        info = pb.WorkerInfo(worker_id=self.worker_id, total_cpu=1, total_memory=1)
                        registered = (await stub.RegisterWorker(info, timeout=2)).success
                    await stub.SendHeartbeat(heartbeat, timeout=2)
                    self.acked.append(time.monotonic())
                    delay = INTERVAL
                except grpc.aio.AioRpcError as exc:
                    self.failed.append(time.monotonic())
                    registered = registered and exc.code() != grpc.StatusCode.NOT_FOUND
                    delay = 0.1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)


async def test_telemetry_reaches_dashboards_on_the_master_and_on_a_gateway(
    tmp_path: Path, nats_url: str, prefix: str, processes: list[Any]
) -> None:
    master = start_master(
        tmp_path,
        "--bus",
        nats_url,
        "--allow-worker",
        "w1",
        "--allow-worker",
        "go1",
        CLOUDAI_BUS_PREFIX=prefix,
    )
    processes.append(master)
    g1 = start_gateway(tmp_path, "g1", nats_url, prefix)
    processes.append(g1)
    g2 = start_gateway(tmp_path, "g2", nats_url, prefix, grpc_port=g1.ready["grpc_port"])
    processes.append(g2)
    assert g1.extra["grpc"] == g2.extra["grpc"]  # one address, two processes
    processes.append(
        start_worker(tmp_path, "w1", "--interval", str(INTERVAL), master=g1.extra["grpc"])
    )
    go = GoLikeWorker("go1", tmp_path)
    processes.append(go)
    await go.announce(g1.extra["grpc"])
    async with Dashboard(master.extra["ws"]) as on_master, Dashboard(g2.extra["ws"]) as on_g2:
        await async_wait_until(
            lambda: on_master.active(["w1", "go1"]) and on_g2.active(["w1", "go1"]),
            WAIT,
            "both workers' telemetry on the master's and on a gateway's /ws/telemetry",
        )
        # The same JSON contract: the same keys, in the same order, for each worker.
        for worker_id in ("w1", "go1"):
            assert list(on_master.latest[worker_id]) == list(on_g2.latest[worker_id])
        assert on_g2.latest["go1"]["cpu_usage"] == 12.5  # what the Go-like worker sends
        assert "load_avg" not in on_g2.latest["go1"]  # a Go worker's entry: original keys
    assert "registered" in master.log() and "gateway g" in master.log()


@pytest.mark.fault
async def test_a_gateway_killed_under_load_loses_no_worker(
    tmp_path: Path, nats_url: str, prefix: str, processes: list[Any]
) -> None:
    timeout = 6.0  # the master's inactivity timeout, scaled down from 30 s
    simulated = [f"sim-{i}" for i in range(SIMULATED)]
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("\n".join(["w1", "w2", "go1", *simulated]) + "\n")
    master = start_master(
        tmp_path,
        "--bus",
        nats_url,
        "--allow-workers-file",
        str(allowed),
        "--inactivity-timeout",
        str(timeout),
        CLOUDAI_BUS_PREFIX=prefix,
    )
    started = time.monotonic()
    processes.append(master)
    g1 = start_gateway(tmp_path, "g1", nats_url, prefix, ws=False)
    processes.append(g1)
    g2 = start_gateway(tmp_path, "g2", nats_url, prefix, grpc_port=g1.ready["grpc_port"], ws=False)
    processes.append(g2)
    address = g1.extra["grpc"]
    for worker_id in ("w1", "w2"):
        processes.append(
            start_worker(tmp_path, worker_id, "--interval", str(INTERVAL), master=address)
        )
    go = GoLikeWorker("go1", tmp_path)
    processes.append(go)
    await go.announce(address)
    stop = asyncio.Event()
    sims = [SimulatedWorker(w, address) for w in simulated]
    runs = [asyncio.ensure_future(s.run(stop)) for s in sims]
    everyone = ["w1", "w2", "go1", *simulated]
    try:
        async with Dashboard(master.extra["ws"]) as dashboard:
            await async_wait_until(lambda: dashboard.active(everyone), WAIT, "every worker active")
            # Past the start-up grace, so that an inactive transition could happen.
            await async_wait_until(
                lambda: time.monotonic() - started > timeout + 1, WAIT, "the start-up grace"
            )
            killed_at = time.monotonic()
            g1.proc.send_signal(signal.SIGKILL)
            g1.proc.wait()
            # Watch for more than the inactivity timeout after the kill.
            await async_wait_until(
                lambda: time.monotonic() - killed_at > timeout + 1, 3 * timeout, "the watch"
            )
            # The workers that were on the killed gateway: those it registered.
            on_g1 = {w for w in everyone if f"worker {w} registered (gateway g1 " in master.log()}
            moved = [s for s in sims if s.worker_id in on_g1]
            assert moved, "no simulated worker was on the killed gateway"
            # From the kill to each one's first heartbeat acknowledged by the other gateway
            # (a heartbeat due up to one interval after the kill included).
            reconnect = {
                s.worker_id: min(t for t in s.acked if t >= killed_at) - killed_at for s in moved
            }
            # Our streaming workers and the Go-like one: the longest silence on the master.
            gaps = {
                w: max(
                    (
                        b - a
                        for a, b in zip(
                            dashboard.arrivals[w], dashboard.arrivals[w][1:], strict=False
                        )
                        if b >= killed_at
                    ),
                    default=0.0,
                )
                for w in ("w1", "w2", "go1")
            }
            worst = max(reconnect.values())
            print(
                f"moved {len(moved)}/{len(sims)} simulated, {sorted(on_g1 - set(simulated))};"
                f" reconnect max {worst:.2f} s; gaps on the master {gaps}"
            )
            assert max(reconnect.values()) <= 2 * INTERVAL, reconnect
            # One interval as usual plus at most two to reconnect.
            assert all(gap <= 3 * INTERVAL for gap in gaps.values()), gaps
            assert not dashboard.inactive, f"false inactive: {sorted(dashboard.inactive)}"
            async with (
                aiohttp.ClientSession() as http,
                http.get(master.extra["http"] + "/health") as response,
            ):
                health = await response.json()
            assert health["inactive_workers"] == 0 and health["active_workers"] == len(everyone)
    finally:
        stop.set()
        await asyncio.gather(*runs, return_exceptions=True)
