"""Richer telemetry end to end: a real worker process's heartbeats reach a WebSocket
client and the API with the new keys; a Go-shaped heartbeat keeps the earlier shape; a
bad figure is refused like any bad heartbeat."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import orjson
import psutil
import pytest

from cloudai.proto import pb, rpc
from tests.harness import Process, async_wait_until, start_master, start_worker

EARLIER_KEYS = [
    "worker_id",
    "cpu_usage",
    "memory_usage",
    "gpu_usage",
    "running_tasks",
    "last_update",
    "is_active",
    "storage_usage",
    "state",
]
RATES = (
    "net_rx_bytes_per_sec",
    "net_tx_bytes_per_sec",
    "disk_read_bytes_per_sec",
    "disk_write_bytes_per_sec",
)


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict:
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


def sane_amount(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def assert_sane_resources(worker: dict) -> None:
    assert list(worker)[: len(EARLIER_KEYS)] == EARLIER_KEYS  # additions come after
    for name in ("load_avg", "memory_used_bytes", "memory_total_bytes"):
        assert name in worker, name
    for name in RATES:
        if name in worker:  # absent only where the machine cannot count (no /proc/diskstats)
            assert sane_amount(worker[name]), (name, worker[name])
    assert "net_rx_bytes_per_sec" in worker and "net_tx_bytes_per_sec" in worker
    load = worker["load_avg"]
    assert isinstance(load, list) and len(load) == 3 and all(sane_amount(v) for v in load)
    total = psutil.virtual_memory().total
    assert worker["memory_total_bytes"] == total
    assert 0 < worker["memory_used_bytes"] <= total
    assert 0 < worker["storage_used_bytes"] <= worker["storage_total_bytes"]
    for gpu in worker.get("gpus", []):  # only on a machine with an NVIDIA GPU and driver
        assert 0 <= gpu["utilization"] <= 100
        assert 0 <= gpu["memory_used_bytes"] <= gpu["memory_total_bytes"]


async def test_a_real_workers_figures_reach_the_stream_and_the_api(
    tmp_path: Path, procs: list[Process], http: aiohttp.ClientSession
) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1")
    procs.append(master)
    async with http.ws_connect(master.extra["ws"] + "/ws/telemetry/w1") as ws:
        procs.append(start_worker(tmp_path, "w1", "--interval", "0.3", master=master.extra["grpc"]))

        async def measured() -> dict | None:
            worker = (await next_json(ws)).get("w1", {})
            return worker if "memory_total_bytes" in worker else None

        worker = await async_wait_until(measured, 30, "a heartbeat with the new keys")
        assert_sane_resources(worker)
        # The next heartbeats carry rates over their own interval: still sane.
        worker = await async_wait_until(measured, 30, "a second heartbeat")
        assert_sane_resources(worker)
    async with http.get(f"{master.extra['http']}/api/workers/w1") as r:
        assert r.status == 200
        view = await r.json()
    assert view["memory_total_bytes"] == psutil.virtual_memory().total
    assert len(view["load_avg"]) == 3 and sane_amount(view["net_rx_bytes_per_sec"])
    assert isinstance(view["gpus"], list)


async def test_go_heartbeats_keep_the_shape_and_bad_figures_are_refused(
    tmp_path: Path, procs: list[Process], http: aiohttp.ClientSession
) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1=127.0.0.1:9")
    procs.append(master)
    async with (
        grpc.aio.insecure_channel(master.extra["grpc"]) as channel,
        http.ws_connect(master.extra["ws"] + "/ws/telemetry/w1") as ws,
    ):
        stub = rpc.MasterWorkerStub(channel)
        ack = await stub.RegisterWorker(pb.WorkerInfo(worker_id="w1", worker_ip="127.0.0.1:9"))
        assert ack.success, ack.message
        await stub.SendHeartbeat(pb.Heartbeat(worker_id="w1", cpu_usage=12.5, memory_usage=4))

        async def go_shaped() -> dict | None:
            worker = (await next_json(ws)).get("w1", {})
            return worker if worker.get("cpu_usage") == 12.5 else None

        worker = await async_wait_until(go_shaped, 20, "the Go-shaped heartbeat")
        assert list(worker) == EARLIER_KEYS

        for bad in (
            pb.Heartbeat(worker_id="w1", net_rx_bytes_per_sec=float("nan")),
            pb.Heartbeat(worker_id="w1", memory_used_bytes=2, memory_total_bytes=1),
            pb.Heartbeat(worker_id="w1", gpus=[pb.GpuDevice(utilization=250.0)]),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SendHeartbeat(bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "invalid heartbeat" in (err.value.details() or "")
        await stub.SendHeartbeat(pb.Heartbeat(worker_id="w1", cpu_usage=7.0, load_avg_1m=0.5))

        async def accepted() -> dict | None:
            worker = (await next_json(ws)).get("w1", {})
            return worker if worker.get("cpu_usage") == 7.0 else None

        worker = await async_wait_until(accepted, 20, "a valid heartbeat after the bad ones")
        assert list(worker) == [*EARLIER_KEYS, "load_avg"]
        assert worker["load_avg"] == [0.5, None, None]
    assert "Traceback" not in master.log()
