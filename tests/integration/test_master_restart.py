"""What the master knows survives a restart, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import grpc

from cloudai.proto import pb, rpc
from tests.harness import start_master


def master_args(database_url: str | None) -> list[str]:
    return ["--database-url", database_url] if database_url else []


async def test_registry_survives_restart(tmp_path: Path, database_url: str | None) -> None:
    master = start_master(tmp_path, *master_args(database_url))
    try:
        async with aiohttp.ClientSession(base_url=master.extra["http"]) as http:
            async with http.post(
                "/api/workers", json={"worker_id": "w1", "address": "127.0.0.1:9"}
            ) as r:
                assert r.status == 201
        async with grpc.aio.insecure_channel(master.extra["grpc"]) as channel:
            stub = rpc.MasterWorkerStub(channel)
            info = pb.WorkerInfo(worker_id="w1", total_cpu=6, total_memory=12, total_storage=99)
            assert (await stub.RegisterWorker(info)).success
            await stub.SendHeartbeat(pb.Heartbeat(worker_id="w1", cpu_usage=1))
        assert master.stop() == 0
    finally:
        master.kill()

    master = start_master(tmp_path, *master_args(database_url), name="master2")
    try:
        async with aiohttp.ClientSession(base_url=master.extra["http"]) as http:
            async with http.get("/api/workers/w1") as r:
                assert r.status == 200
                worker = await r.json()
        assert worker["address"] == "127.0.0.1:9"
        assert (worker["total_cpu"], worker["total_memory"], worker["total_storage"]) == (6, 12, 99)
        assert worker["registered"] is False  # a session does not survive; the worker re-registers
        async with grpc.aio.insecure_channel(master.extra["grpc"]) as channel:
            stub = rpc.MasterWorkerStub(channel)
            # Pre-registered before the restart: the worker rejoins without the admin.
            assert (await stub.RegisterWorker(pb.WorkerInfo(worker_id="w1"))).success
    finally:
        master.kill()
