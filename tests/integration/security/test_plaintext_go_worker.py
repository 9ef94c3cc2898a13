"""An ``--insecure`` master still serves a worker that speaks only the plaintext protocol,
as the existing Go worker does (``tests/go_like_worker.py``): the admin registers it by
address over plain HTTP from loopback, the master calls its MasterRegister, it registers
with an EMPTY worker_ip (the master keeps the admin's address), heartbeats over unary
calls and runs a task to ``success``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudai.api.models import TaskWithLogs, Worker
from cloudai.cli.api_client import ApiClient, ApiError
from tests.harness import REPO, Process, admin_client, async_wait_until, child_env, start_master

INSECURE_WARNING = "--insecure: plaintext gRPC and HTTP, no certificates and no tokens"


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Process]:
    process = start_master(tmp_path)  # --insecure
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
async def go_worker() -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.go_like_worker",
        "g1",
        stdout=asyncio.subprocess.PIPE,
        env=child_env(),
        cwd=REPO,
    )
    try:
        first = await next_event(proc)
        yield str(first["listening"]), proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def next_event(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line, "the Go-like worker exited"
    event: dict[str, Any] = orjson.loads(line)
    return event


async def event_with(proc: asyncio.subprocess.Process, key: str) -> dict[str, Any]:
    """The next event that carries ``key``; a heartbeat error before it fails the test."""
    while True:
        event = await next_event(proc)
        assert "heartbeat_error" not in event, event
        if key in event:
            return event


async def test_an_insecure_master_serves_a_go_like_worker(
    master: Process, go_worker: tuple[str, asyncio.subprocess.Process]
) -> None:
    address, proc = go_worker
    api: ApiClient = admin_client(master)
    assert api.url.startswith("http://") and api.token is None  # plain HTTP, no token
    assert INSECURE_WARNING in master.log()

    registered = await asyncio.to_thread(api.register, "g1", address)
    assert registered.address == address
    told = await event_with(proc, "master")
    assert str(told["master"]).endswith(f":{master.ready['grpc_port']}")
    ack = await event_with(proc, "registered")
    assert ack["registered"] is True, ack

    async def active() -> Worker | None:
        try:
            view = await asyncio.to_thread(api.worker, "g1")
        except ApiError:
            return None
        return view if view.is_active and view.memory_usage == 40.0 else None

    view: Worker = await async_wait_until(active, 20, "g1 active with its heartbeats")
    assert view.address == address  # the admin's, not the empty worker_ip
    assert (view.cpu_usage, view.total_cpu, view.total_memory) == (12.5, 2.0, 4.0)

    task = await asyncio.to_thread(api.submit, "g1", command="echo from-go")
    assert (await event_with(proc, "task"))["task"] == task.task_id
    result = await event_with(proc, "result")
    assert result == {"result": task.task_id, "acked": True}

    async def finished() -> TaskWithLogs | None:
        current = await asyncio.to_thread(api.task, task.task_id)
        return current if current.status in ("success", "failure") else None

    done: TaskWithLogs = await async_wait_until(finished, 20, "the task to finish")
    assert done.status == "success" and done.logs == "echo from-go", done
    assert "Traceback" not in master.log()
