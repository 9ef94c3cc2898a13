"""What the master knows survives a restart, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import grpc
import pytest

from cloudai.cli.api_client import ApiClient
from cloudai.master.persistence import UNCONFIRMED
from cloudai.proto import pb, rpc
from cloudai.store import open_store
from tests.harness import async_wait_until, start_master, start_worker, wait_until

WORKER_COMES_BACK = {  # a worker re-registers within about a second of a master's restart
    "CLOUDAI_BACKOFF_INITIAL": "0.1",
    "CLOUDAI_HEARTBEAT_BACKOFF_MAX": "0.5",
    "CLOUDAI_REGISTER_BACKOFF_MAX": "0.5",
}


def master_args(database_url: str | None) -> list[str]:
    return ["--database-url", database_url] if database_url else []


async def test_registry_survives_restart(tmp_path: Path, database_url: str | None) -> None:
    master = start_master(tmp_path, *master_args(database_url))
    try:
        async with (
            aiohttp.ClientSession(base_url=master.extra["http"]) as http,
            http.post("/api/workers", json={"worker_id": "w1", "address": "127.0.0.1:9"}) as r,
        ):
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
        async with (
            aiohttp.ClientSession(base_url=master.extra["http"]) as http,
            http.get("/api/workers/w1") as r,
        ):
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


async def test_tasks_and_results_survive_restart(tmp_path: Path, database_url: str | None) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1", *master_args(database_url))
    worker = start_worker(tmp_path, "w1", "--interval", "0.3", master=master.extra["grpc"])
    try:
        async with aiohttp.ClientSession(base_url=master.extra["http"]) as http:

            async def active() -> bool:
                async with http.get("/api/workers/w1") as r:
                    return r.status == 200 and (await r.json())["is_active"]

            await async_wait_until(active, 20, "w1 active")
            async with http.post(
                "/api/tasks", json={"worker_id": "w1", "command": "echo persisted; exit 4"}
            ) as r:
                assert r.status == 201
                task_id = (await r.json())["task_id"]

            async def finished() -> dict | None:
                async with http.get(f"/api/tasks/{task_id}") as r:
                    task = await r.json()
                    return task if task["status"] == "failure" else None

            before = await async_wait_until(finished, 20, "the task's result")
        assert master.stop() == 0
    finally:
        worker.kill()
        master.kill()

    with open_store(database_url, tmp_path / "data") as store:
        (assignment,) = store.list_assignments(task_id)
        assert (assignment.worker_id, assignment.acknowledged) == ("w1", True)
        result = store.get_result(task_id)
        assert result is not None and result.exit_code == 4

    master = start_master(tmp_path, *master_args(database_url), name="master2")
    try:
        async with aiohttp.ClientSession(base_url=master.extra["http"]) as http:
            async with http.get(f"/api/tasks/{task_id}") as r:
                after = await r.json()
            async with http.get("/api/tasks", params={"status": "failure"}) as r:
                listed = [t["task_id"] for t in await r.json()]
        assert listed == [task_id]
        for key in ("status", "exit_code", "logs", "command", "worker_id", "result_location"):
            assert after[key] == before[key], key
        assert after["exit_code"] == 4 and "persisted" in after["logs"]
        assert after["finished_at"] == pytest.approx(before["finished_at"], abs=1e-3)
    finally:
        master.kill()


def test_a_retry_waiting_at_a_restart_runs_after_it(
    tmp_path: Path, database_url: str | None
) -> None:
    """Killed while a task waits for its second attempt (the back-off runs): the
    restarted master hands that attempt to the worker when the back-off ends, and it
    runs; it is not taken for an assignment the worker may have, nor called lost."""
    marker = tmp_path / "first-run"
    command = f"if [ -e {marker} ]; then echo second run; else touch {marker}; exit 3; fi"
    args = ["--allow-worker", "w1", *master_args(database_url)]
    master = start_master(tmp_path, *args, CLOUDAI_TASK_RETRY_DELAY="5")
    ports = ["--grpc-port", str(master.ready["grpc_port"])]
    ports += ["--http-port", str(master.ready["http_port"])]
    worker = start_worker(
        tmp_path, "w1", "--interval", "0.3", master=master.extra["grpc"], **WORKER_COMES_BACK
    )
    try:
        api = ApiClient(master.extra["http"])
        wait_until(lambda: api.worker("w1").registered, 20, "w1 registered")
        api.submit("w1", command=command, task_id="t-retry", retries=1)

        def waiting() -> bool:
            task = api.task("t-retry")
            return task.status == "queued" and task.attempt == 2

        wait_until(waiting, 20, "the first attempt to fail")
        master.kill()  # SIGKILL, within the 5 s back-off
        with open_store(database_url, tmp_path / "data") as store:
            record = store.get_task("t-retry")
        assert record is not None and (record.status, record.attempt) == ("queued", 2)
        assert record.retry_at is not None, "attempt 2 was handed over before the kill"

        master = start_master(tmp_path, *args, *ports, name="master2")
        api = ApiClient(master.extra["http"])
        task = api.task("t-retry")
        assert task.status == "queued" and task.message != UNCONFIRMED, task
        wait_until(lambda: api.task("t-retry").finished_at, 30, "the second attempt to end")
        task = api.task("t-retry")
        assert (task.status, task.attempt, task.exit_code) == ("success", 2, 0), task
        assert [(a.attempt, a.status, a.exit_code) for a in task.attempts] == [(1, "failure", 3)]
        assert api.logs("t-retry").logs.startswith("second run\n")
    finally:
        worker.kill()
        master.kill()
