"""The admin HTTP API of a real master process (worker-independent parts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from cloudai.proto import pb, rpc
from tests.harness import Process, start_master

TOKEN = "s3cret-token"


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Process]:
    process = start_master(tmp_path, CLOUDAI_ADMIN_TOKEN=TOKEN)
    yield process
    process.kill()


@pytest.fixture
async def http(master: Process) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=master.extra["http"]) as session:
        yield session


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_openapi_document(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    for path in ("/api/workers", "/api/tasks", "/api/tasks/{task_id}/cancel", "/health"):
        assert path in doc["paths"]


async def test_mutations_need_the_token(http: aiohttp.ClientSession) -> None:
    async with http.post("/api/workers", json={"worker_id": "w1", "address": "127.0.0.1:9"}) as r:
        assert r.status == 401
        assert "admin token" in (await r.json())["error"]
    async with http.post(
        "/api/workers",
        json={"worker_id": "w1", "address": "127.0.0.1:9"},
        headers={"Authorization": "Bearer wrong"},
    ) as r:
        assert r.status == 401
    async with http.get("/api/workers") as r:  # reads are open
        assert r.status == 200 and await r.json() == []


async def test_worker_lifecycle(master: Process, http: aiohttp.ClientSession) -> None:
    async with http.post(
        "/api/workers", json={"worker_id": "w1", "address": "127.0.0.1:9"}, headers=AUTH
    ) as r:
        assert r.status == 201, await r.text()
        assert (await r.json())["registered"] is False
    async with grpc.aio.insecure_channel(master.extra["grpc"]) as channel:
        stub = rpc.MasterWorkerStub(channel)
        ack = await stub.RegisterWorker(pb.WorkerInfo(worker_id="w1", total_cpu=2, total_memory=4))
        assert ack.success
        await stub.SendHeartbeat(pb.Heartbeat(worker_id="w1", cpu_usage=42.0))
    async with http.get("/api/workers/w1") as r:
        worker = await r.json()
    assert worker["registered"] is True and worker["total_cpu"] == 2
    assert worker["address"] == "127.0.0.1:9"  # empty worker_ip keeps the admin's address
    async with http.get("/api/status") as r:
        summary = await r.json()
    assert summary["workers"] == 1 and summary["heartbeats"] == 1
    async with http.delete("/api/workers/w1", headers=AUTH) as r:
        assert r.status == 204
    async with http.get("/api/workers/w1") as r:
        assert r.status == 404
        assert "unknown worker" in (await r.json())["error"]
    async with http.delete("/api/workers/w1", headers=AUTH) as r:
        assert r.status == 404


async def test_clear_errors(http: aiohttp.ClientSession) -> None:
    async with http.post("/api/workers", data=b"{nope", headers=AUTH) as r:
        assert r.status == 400 and "JSON" in (await r.json())["error"]
    async with http.post(
        "/api/workers", json={"worker_id": "bad id", "address": "x:1"}, headers=AUTH
    ) as r:
        assert r.status == 400 and "worker_id" in (await r.json())["error"]
    async with http.post(
        "/api/tasks", json={"worker_id": "nobody", "command": "true"}, headers=AUTH
    ) as r:
        assert r.status == 404
    async with http.post("/api/tasks", json={"worker_id": "w", "req_cpu": "x"}, headers=AUTH) as r:
        assert r.status == 400
    async with http.post("/api/tasks", json={"worker_id": "w"}, headers=AUTH) as r:
        assert r.status == 400 and "docker_image or a command" in (await r.json())["error"]
    async with http.get("/api/tasks/none") as r:
        assert r.status == 404
    async with http.get("/api/nothing-here") as r:
        assert r.status == 404 and "error" in await r.json()
