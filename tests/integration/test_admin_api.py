"""The admin HTTP API of a real master process (worker-independent parts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from yarl import URL

from cloudai.master.admin_api import openapi_document
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


async def test_an_insecure_master_says_it_takes_no_tokens(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/session") as r:
        assert r.status == 200
        assert await r.json() == {"secured": False, "scope": None}


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


async def _error(r: aiohttp.ClientResponse) -> str:
    assert r.content_type == "application/json"
    body = await r.json()
    assert list(body) == ["error"] and "\n" not in body["error"]
    return str(body["error"])


async def test_bodies_are_checked_by_the_models(http: aiohttp.ClientSession) -> None:
    async with http.post(
        "/api/workers", json={"worker_id": "w1", "adress": "127.0.0.1:9"}, headers=AUTH
    ) as r:
        assert r.status == 400
        assert await _error(r) == "unknown field 'adress' (known: worker_id, address)"
    async with http.post(
        "/api/tasks", json={"worker_id": "w1", "command": "x", "req_cpu": "2"}, headers=AUTH
    ) as r:
        assert r.status == 400 and await _error(r) == "req_cpu: input should be a valid number"
    async with http.post("/api/workers", json=["w1"], headers=AUTH) as r:
        assert r.status == 400 and await _error(r) == "the body must be a JSON object"
    async with http.post(
        "/api/workers", json={"worker_id": "w1", "address": "no-port"}, headers=AUTH
    ) as r:
        assert r.status == 400 and (await _error(r)).startswith("address 'no-port' is not")
    # curl -d sends application/x-www-form-urlencoded: the body is read as JSON anyway.
    async with http.post(
        "/api/workers",
        data=b'{"worker_id": "w1"}',
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        assert r.status == 201


async def test_the_task_query_is_checked(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/tasks", params={"status": "bogus"}) as r:
        assert r.status == 400
        assert await _error(r) == (
            "status must be one of 'queued', 'assigned', 'running', 'success', 'failure', "
            "'cancelled', 'rejected', 'lost' or 'timed_out', got 'bogus'"
        )
    async with http.get("/api/tasks", params={"worker_id": "no/such id"}) as r:
        assert r.status == 400 and "has invalid characters" in await _error(r)
    async with http.get("/api/tasks", params={"status": "running", "worker_id": "w1"}) as r:
        assert r.status == 200 and await r.json() == []


async def test_routing_errors_are_json(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/nothing-here") as r:
        assert r.status == 404
        assert await _error(r) == "no such endpoint: GET /api/nothing-here"
    async with http.get(URL("/api/a%0Ab", encoded=True)) as r:  # still one line
        assert r.status == 404 and await _error(r) == "no such endpoint: GET /api/a%0Ab"
    async with http.patch("/api/workers", json={}) as r:  # no token: 405 comes first
        assert r.status == 405 and r.headers["Allow"] == "GET, POST"
        assert await _error(r) == (
            "method PATCH is not allowed on /api/workers (allowed: GET, POST)"
        )
    async with http.put("/api/tasks/t1", headers=AUTH) as r:
        assert r.status == 405 and r.headers["Allow"] == "GET"
    async with http.delete("/api/status", headers=AUTH) as r:
        assert r.status == 405 and r.headers["Allow"] == "GET"
        await _error(r)


async def test_bodies_over_the_limit_are_refused(http: aiohttp.ClientSession) -> None:
    big = b'{"worker_id": "w1", "command": "' + b"x" * (1024 * 1024) + b'"}'
    async with http.post("/api/tasks", data=big, headers=AUTH) as r:
        assert r.status == 413
        assert await _error(r) == "the body is larger than the limit of 1 MiB"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(5):
            yield b" " * (300 * 1024)

    async with http.post("/api/workers", data=chunks(), headers=AUTH) as r:
        assert r.status == 413 and "1 MiB" in await _error(r)


async def test_answers_keep_their_shapes(http: aiohttp.ClientSession) -> None:
    async with http.post("/api/workers", json={"worker_id": "w1"}, headers=AUTH) as r:
        assert r.status == 201
        worker = await r.json()
    assert list(worker) == [
        "worker_id", "address", "registered", "total_cpu", "total_memory", "total_storage",
        "total_gpu", "is_active", "cpu_usage", "memory_usage", "storage_usage", "gpu_usage",
        "running_tasks", "last_update",
        # measured figures (richer telemetry), added after them; null until measured
        "net_rx_bytes_per_sec", "net_tx_bytes_per_sec", "disk_read_bytes_per_sec",
        "disk_write_bytes_per_sec", "load_avg", "memory_used_bytes", "memory_total_bytes",
        "storage_used_bytes", "storage_total_bytes", "gpu_memory_used_bytes",
        "gpu_memory_total_bytes", "gpus",
        "task_limits",  # how it holds process tasks to their requests
    ]  # fmt: skip
    async with http.get("/api/status") as r:
        summary = await r.json()
    assert set(summary) == {
        "workers", "workers_reporting", "active_workers", "tasks_running", "tasks_queued",
        "tasks_finished", "tasks_by_status", "heartbeats", "heartbeats_per_second",
        "websocket_clients", "fanout_tick_ms",
    }  # fmt: skip
    async with http.get("/api/openapi.json") as r:
        assert r.content_type == "application/json"
        doc = await r.json()
    assert doc == openapi_document()


async def test_the_newest_tasks_only(http: aiohttp.ClientSession) -> None:
    async with http.post("/api/workers", json={"worker_id": "away"}, headers=AUTH) as r:
        assert r.status == 201  # authorised, not connected: its tasks wait for it
    for task_id in ("t1", "t2", "t3"):
        body = {"worker_id": "away", "command": "true", "task_id": task_id}
        async with http.post("/api/tasks", json=body, headers=AUTH) as r:
            assert r.status == 201, await r.text()
    async with http.get("/api/tasks", params={"limit": "2"}) as r:
        assert [t["task_id"] for t in await r.json()] == ["t2", "t3"]
    async with http.get("/api/tasks", params={"limit": "0"}) as r:
        assert r.status == 400 and "limit" in await _error(r)
