"""A real master with the synchronous gRPC server (``grpc_server = "sync"``): a Go-like
worker registers, sends unary heartbeats (applied on the event loop in batches), takes a
task over the master's aio channel and reports its result; our own worker, finding no
StreamHeartbeats, falls back to unary heartbeats."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import orjson
import pytest

from cloudai.cli.api_client import ApiClient
from cloudai.proto import pb, rpc
from tests.harness import (
    REPO,
    Process,
    async_wait_until,
    child_env,
    start_master,
    start_worker,
    wait_heartbeat,
)


@pytest.fixture
def sync_master(tmp_path: Path) -> Iterator[Process]:
    process = start_master(tmp_path, CLOUDAI_GRPC_SERVER="sync")
    yield process
    process.close()


@pytest.fixture
async def go_like_worker() -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.go_like_worker",
        "go-sync",
        stdout=asyncio.subprocess.PIPE,
        env=child_env(),
        cwd=REPO,
    )
    assert proc.stdout is not None
    first = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    yield first["listening"]
    proc.kill()
    await proc.wait()


async def test_a_go_like_worker_heartbeats_and_runs_a_task(
    sync_master: Process, go_like_worker: str
) -> None:
    api = ApiClient(sync_master.extra["http"])
    await asyncio.to_thread(api.register, "go-sync", go_like_worker)  # MasterRegister

    async def heartbeats() -> bool:
        worker = await asyncio.to_thread(api.worker, "go-sync")
        return worker.is_active and worker.memory_usage > 0

    await async_wait_until(heartbeats, 20, "heartbeats from the Go-like worker")
    task = await asyncio.to_thread(api.submit, "go-sync", command="echo hi", task_id="t-sync")
    # AssignTask went over the master's aio channel; the Go-like worker may report its
    # result before the submit's answer is built, so the task may already be finished.
    assert task.status in {"assigned", "success"}

    async def finished() -> bool:
        return (await asyncio.to_thread(api.task, "t-sync")).status == "success"

    await async_wait_until(finished, 20, "the result reported (ReportTaskCompletion)")


async def test_refusals_are_answered_as_on_the_aio_server(sync_master: Process) -> None:
    async with grpc.aio.insecure_channel(sync_master.extra["grpc"]) as channel:
        stub = rpc.MasterWorkerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.SendHeartbeat(pb.Heartbeat(worker_id="nobody", cpu_usage=1.0))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "not registered" in (unknown.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.SendHeartbeat(pb.Heartbeat(worker_id="nobody", cpu_usage=500.0))
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as stream:
            await stub.StreamHeartbeats(iter([pb.Heartbeat(worker_id="nobody")]))
        assert stream.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_our_worker_falls_back_to_unary_heartbeats(sync_master: Process, tmp_path: Path) -> None:
    worker = start_worker(tmp_path, "py-sync", "--interval", "0.3")  # waits for the master
    try:
        ApiClient(sync_master.extra["http"]).register("py-sync", worker.extra["address"])
        view = wait_heartbeat(sync_master.extra["http"], "py-sync")
        assert view["is_active"]
    finally:
        worker.close()
