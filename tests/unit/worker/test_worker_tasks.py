from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cloudai.proto import pb
from cloudai.worker.results_spool import ResultSpool
from cloudai.worker.runtimes.base import (
    Runtime,
    RuntimeStartError,
    TaskHandle,
    TaskSpec,
)
from cloudai.worker.runtimes.docker import DockerRuntime
from cloudai.worker.runtimes.process import ProcessRuntime
from cloudai.worker.samplers import MachineTotals
from cloudai.worker.tasks import TaskManager

PY = sys.executable
TOTALS = MachineTotals(cpu_cores=2.0, memory_gb=4.0, storage_gb=100.0, gpu_count=0.0)


def no_engine() -> Any:
    raise FileNotFoundError("docker.sock")


class Results:
    def __init__(self) -> None:
        self.items: dict[str, pb.TaskResult] = {}

    def __call__(self, result: pb.TaskResult) -> None:
        self.items[result.task_id] = result


@pytest.fixture
def results() -> Results:
    return Results()


@pytest.fixture
def manager(tmp_path: Path, results: Results) -> TaskManager:
    return TaskManager(
        "w1",
        TOTALS,
        tmp_path,
        ResultSpool(tmp_path / "results"),
        ProcessRuntime(64 * 1024, kill_grace=0.5),
        DockerRuntime("w1", 1024, no_engine),
        kill_grace=0.5,
        storage_free_gb=lambda: 50.0,
        on_result=results,
    )


def task(task_id: str = "t1", command: str = "echo hi", **kwargs: Any) -> pb.Task:
    return pb.Task(task_id=task_id, command=command, **kwargs)


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (pb.Task(task_id="t1"), "has neither docker_image nor command"),
        (task(req_cpu=3), "requests 3 cores of CPU cores but worker w1 has 2 cores free"),
        (task(req_memory=4.5), "requests 4.5 GiB of memory but worker w1 has 4 GiB free"),
        (task(req_gpu=1), "requests 1 GPUs of GPUs but worker w1 has 0 GPUs free"),
        (task(req_storage=60), "the disk of worker w1 has 50 GiB free"),
        (task(req_cpu=float("nan")), "req_cpu must be a finite number >= 0"),
        (task(req_memory=-1), "req_memory must be a finite number >= 0"),
        (task(task_id="../x"), "invalid task: task_id"),
        (task(task_id=""), "task_id must not be empty"),
        (task(target_worker_id="w2"), "is meant for worker 'w2', not 'w1'"),
        (task(docker_image="alpine:3"), "needs Docker image 'alpine:3': no Docker engine"),
    ],
)
async def test_refusals_have_clear_messages(
    manager: TaskManager, message: pb.Task, expected: str
) -> None:
    ok, text = await manager.assign(message)
    assert not ok
    assert expected in text
    assert len(manager) == 0  # nothing reserved


async def test_duplicate_task_ids_are_refused(
    manager: TaskManager, results: Results, eventually: Any
) -> None:
    assert (await manager.assign(task("t1", "sleep 30")))[0]
    ok, message = await manager.assign(task("t1", "echo again"))
    assert (ok, message) == (False, "task 't1' is already running on worker w1")
    await manager.cancel("t1")
    await eventually(lambda: "t1" in results.items)
    ok, message = await manager.assign(task("t1", "echo again"))
    assert not ok and "its result is waiting for delivery" in message


async def test_capacity_counts_allocated_tasks(
    manager: TaskManager, results: Results, eventually: Any
) -> None:
    assert (await manager.assign(task("a", "sleep 30", req_cpu=1, req_memory=1)))[0]
    assert (await manager.assign(task("b", "sleep 30", req_cpu=1, req_memory=1)))[0]
    assert manager.allocated()["cpu"] == 2
    ok, message = await manager.assign(task("c", "true", req_cpu=0.5))
    assert not ok and "has 0 cores free (2 cores in all, 2 cores allocated)" in message
    assert (await manager.assign(task("d", "true", req_memory=2)))[0]  # memory still free
    await manager.cancel("a")
    await eventually(lambda: "a" in results.items)
    assert (await manager.assign(task("c", "true", req_cpu=0.5)))[0]
    await manager.drain(0)


async def test_shutting_down_refuses_new_tasks(manager: TaskManager) -> None:
    await manager.drain(0)
    ok, message = await manager.assign(task())
    assert not ok and "shutting down" in message


# -- running and results -----------------------------------------------------------------------


async def test_task_runs_is_listed_and_reports_success(
    manager: TaskManager, results: Results, eventually: Any, tmp_path: Path
) -> None:
    command = f"{PY} -c 'import sys; sys.stdin.close(); print(\"hello\")'; sleep 0.3"
    ok, message = await manager.assign(task("t1", command, req_cpu=0.5, req_memory=0.25))
    assert ok and message == "task 't1' accepted by worker w1 (process)"
    listed = manager.running_tasks()
    assert [(r.task_id, r.status, r.cpu_allocated, r.memory_allocated) for r in listed] == [
        ("t1", "running", 0.5, 0.25)
    ]
    await eventually(lambda: "t1" in results.items, what="the result")
    result = results.items["t1"]
    assert (result.task_id, result.worker_id, result.status, result.exit_code) == (
        "t1",
        "w1",
        "success",
        0,
    )
    assert result.logs == "hello\n[cloudai] exit code 0\n"
    assert not result.logs_truncated
    assert result.result_location == str(tmp_path / "tasks" / "t1")
    assert manager.running_tasks() == []
    assert manager.spool.pending() == [result]  # spooled before anyone is told


async def test_failure_reports_the_exit_code(
    manager: TaskManager, results: Results, eventually: Any
) -> None:
    await manager.assign(task("t1", "echo broken >&2; exit 7"))
    await eventually(lambda: "t1" in results.items)
    result = results.items["t1"]
    assert (result.status, result.exit_code) == ("failure", 7)
    assert result.logs == "broken\n[cloudai] exit code 7\n"


async def test_truncated_logs_are_marked(
    manager: TaskManager, results: Results, eventually: Any
) -> None:
    await manager.assign(task("t1", f"{PY} -c 'print(\"x\" * 200_000)'"))
    await eventually(lambda: "t1" in results.items)
    result = results.items["t1"]
    assert result.logs_truncated
    assert result.logs.startswith("[cloudai] output truncated: the first")
    assert result.logs.endswith("[cloudai] exit code 0\n")
    assert len(result.logs) < 64 * 1024 + 200


async def test_running_tasks_carry_measured_usage(manager: TaskManager, eventually: Any) -> None:
    command = f"{PY} -c 'b = bytearray(50_000_000)\nwhile True: pass'"
    await manager.assign(task("busy", command, req_cpu=1))

    async def measured() -> bool:
        await manager.sample_usage()
        (running,) = manager.running_tasks()
        return running.cpu_usage > 10 and running.memory_used_bytes > 50_000_000

    await eventually(measured, what="measured CPU and memory")
    await manager.drain(0)


async def test_cancel_reports_cancelled(
    manager: TaskManager, results: Results, eventually: Any, tmp_path: Path
) -> None:
    await manager.assign(task("t1", "echo started; sleep 30"))
    output = tmp_path / "tasks" / "t1" / "output.log"
    await eventually(lambda: output.exists() and output.read_bytes() == b"started\n")
    ok, message = await manager.cancel("t1")
    assert ok and "cancelling task 't1'" in message
    assert (await manager.cancel("t1")) == (True, "task 't1' is already being cancelled")
    await eventually(lambda: "t1" in results.items)
    result = results.items["t1"]
    assert result.status == "cancelled"
    assert result.exit_code == 143
    assert result.logs == (
        "started\n[cloudai] cancelled (cancelled by the master); exit code 143"
        " (killed by signal SIGTERM)\n"
    )
    ok, message = await manager.cancel("t1")
    assert not ok and "already finished" in message


async def test_cancel_unknown_task(manager: TaskManager) -> None:
    assert await manager.cancel("nope") == (False, "task 'nope' is not running on worker w1")


class SlowStartRuntime(Runtime):
    name = "slow"

    def __init__(self, error: str | None = None) -> None:
        self.release = asyncio.Event()
        self.error = error
        self.started: list[TaskSpec] = []

    async def refusal(self, spec: TaskSpec) -> str | None:
        return None

    async def start(self, spec: TaskSpec, task_dir: Path, env: Mapping[str, str]) -> TaskHandle:
        await self.release.wait()
        if self.error:
            raise RuntimeStartError(self.error)
        self.started.append(spec)
        return await ProcessRuntime(1024).start(spec, task_dir, env)


def manager_with(runtime: Runtime, tmp_path: Path, results: Results) -> TaskManager:
    return TaskManager(
        "w1", TOTALS, tmp_path, ResultSpool(tmp_path / "r"), runtime, runtime, on_result=results
    )


async def test_start_failure_reports_failure(
    tmp_path: Path, results: Results, eventually: Any
) -> None:
    runtime = SlowStartRuntime(error="cannot run image 'x': pull access denied")
    manager = manager_with(runtime, tmp_path, results)
    assert (await manager.assign(task("t1")))[0]
    runtime.release.set()
    await eventually(lambda: "t1" in results.items)
    result = results.items["t1"]
    assert (result.status, result.exit_code) == ("failure", -1)
    assert "could not start: cannot run image 'x': pull access denied" in result.logs


async def test_cancel_while_starting(tmp_path: Path, results: Results, eventually: Any) -> None:
    runtime = SlowStartRuntime()
    manager = manager_with(runtime, tmp_path, results)
    await manager.assign(task("t1", "sleep 30"))
    assert (await manager.cancel("t1"))[0]
    runtime.release.set()
    await eventually(lambda: "t1" in results.items)
    assert results.items["t1"].status == "cancelled"


async def test_drain_waits_for_short_tasks_and_cancels_long_ones(
    manager: TaskManager, results: Results
) -> None:
    await manager.assign(task("short", "sleep 0.2; echo done"))
    await manager.assign(task("long", "sleep 30"))
    await asyncio.wait_for(manager.drain(1.0), 10)
    assert results.items["short"].status == "success"
    assert results.items["long"].status == "cancelled"
    assert "the worker is shutting down" in results.items["long"].logs
    assert len(manager) == 0
    assert {r.task_id for r in manager.spool.pending()} == {"short", "long"}


async def test_a_second_signal_hurries_the_drain(manager: TaskManager, results: Results) -> None:
    await manager.assign(task("long", "sleep 30"))
    hurry = asyncio.Event()
    drain = asyncio.ensure_future(manager.drain(60.0, hurry))
    hurry.set()
    await asyncio.wait_for(drain, 10)
    assert results.items["long"].status == "cancelled"


async def test_tasks_interrupted_by_a_worker_crash_are_reported_after_restart(
    tmp_path: Path, eventually: Any
) -> None:
    import json

    import psutil

    def new_manager(results: Results) -> TaskManager:
        return TaskManager(
            "w1",
            TOTALS,
            tmp_path,
            ResultSpool(tmp_path / "results"),
            ProcessRuntime(64 * 1024),
            DockerRuntime("w1", 1024, no_engine),
            on_result=results,
        )

    first = new_manager(Results())
    await first.assign(task("t1", "echo working; sleep 60 & sleep 60"))
    marker = tmp_path / "tasks" / "t1" / "task.json"
    await eventually(lambda: "pid" in json.loads(marker.read_text()), what="the marker pid")
    output = tmp_path / "tasks" / "t1" / "output.log"
    await eventually(lambda: output.read_bytes() == b"working\n")
    pid = json.loads(marker.read_text())["pid"]
    # The worker dies: its asyncio tasks vanish, the task's processes go on.
    for entry in list(first._entries.values()):
        assert entry.runner is not None
        entry.runner.cancel()
    assert psutil.pid_exists(pid)

    results = Results()
    second = new_manager(results)  # the restarted worker
    assert await second.recover_interrupted() == 1
    (result,) = second.spool.pending()
    assert (result.task_id, result.status, result.exit_code) == ("t1", "failure", -1)
    assert result.logs.startswith("working\n[cloudai] the worker stopped while the task was")
    assert not marker.exists()

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    await eventually(gone, what="the leftover processes to be killed")
    assert await second.recover_interrupted() == 0
