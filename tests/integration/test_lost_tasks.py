"""Lost tasks with real processes: a worker that accepts tasks and drops them (as the Go
worker does with one it cannot run at once) and a task for a worker that never connects.
The master's deadlines are shortened by its settings (environment variables)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from cloudai.cli.api_client import ApiClient
from tests.harness import Process, async_wait_until, child_env, start_master

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Process]:
    process = start_master(
        tmp_path,
        CLOUDAI_TASK_START_DEADLINE="3",
        CLOUDAI_TASK_OFFLINE_WAIT="3",
    )
    yield process
    process.close()


@pytest.fixture
async def dropping_worker() -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.go_like_worker",
        "dropper",
        stdout=asyncio.subprocess.PIPE,
        env=child_env(GO_LIKE_DROP_TASKS="1"),
        cwd=REPO,
    )
    assert proc.stdout is not None
    first = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    yield first["listening"]
    proc.kill()
    await proc.wait()


async def test_a_dropped_task_becomes_lost_with_its_reason(
    master: Process, dropping_worker: str
) -> None:
    api = ApiClient(master.extra["http"])
    await asyncio.to_thread(api.register, "dropper", dropping_worker)  # admin first

    async def active() -> bool:
        worker = await asyncio.to_thread(api.worker, "dropper")
        return worker.is_active

    await async_wait_until(active, 20, "the dropping worker active")
    task = await asyncio.to_thread(api.submit, "dropper", command="echo never", task_id="t-drop")
    assert task.status == "assigned"

    async def lost() -> bool:
        return (await asyncio.to_thread(api.task, "t-drop")).status == "lost"

    await async_wait_until(lost, 20, "the task marked lost")
    final = await asyncio.to_thread(api.task, "t-drop")
    assert "never listed it as running within 3 s" in final.message


async def test_a_task_for_a_worker_that_never_connects_waits_then_is_lost(
    master: Process,
) -> None:
    api = ApiClient(master.extra["http"])
    await asyncio.to_thread(api.register, "absent", "")
    task = await asyncio.to_thread(api.submit, "absent", command="echo later", task_id="t-wait")
    assert task.status == "queued" and "waiting for worker 'absent'" in task.message

    async def lost() -> bool:
        return (await asyncio.to_thread(api.task, "t-wait")).status == "lost"

    await async_wait_until(lost, 20, "the waiting task marked lost")
    assert "did not connect in time" in (await asyncio.to_thread(api.task, "t-wait")).message
