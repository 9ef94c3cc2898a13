"""Time limits, end reasons and attempts in the TaskManager, with a fake runtime (and one
real process)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cloudai.proto import pb
from cloudai.worker.recovery import interrupted_result, write_marker
from cloudai.worker.results_spool import ResultSpool
from cloudai.worker.runtimes.base import Runtime, TaskHandle, TaskOutcome, TaskSpec, TaskUsage
from cloudai.worker.runtimes.process import ProcessRuntime
from cloudai.worker.samplers import MachineTotals
from cloudai.worker.tasks import TIMED_OUT, TaskManager

TOTALS = MachineTotals(cpu_cores=2.0, memory_gb=4.0, storage_gb=100.0, gpu_count=0.0)
GRACE = 0.25


class FakeHandle(TaskHandle):
    """A task that ends when told to (``finish``) or when cancelled (as by SIGTERM)."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.outcome = TaskOutcome(0, b"out\n")
        self.cancels: list[float] = []

    def finish(self, outcome: TaskOutcome) -> None:
        self.outcome = outcome
        self.ended.set()

    async def wait(self) -> TaskOutcome:
        await self.ended.wait()
        return self.outcome

    async def cancel(self, grace: float) -> None:
        self.cancels.append(grace)
        if not self.ended.is_set():
            self.finish(TaskOutcome(143, b"out\n", detail="killed by signal SIGTERM"))

    def usage(self) -> TaskUsage:
        return TaskUsage()


class FakeRuntime(Runtime):
    name = "fake"

    def __init__(self) -> None:
        self.handles: dict[str, FakeHandle] = {}

    async def refusal(self, spec: TaskSpec) -> str | None:
        return None

    async def start(self, spec: TaskSpec, task_dir: Path, env: Mapping[str, str]) -> TaskHandle:
        handle = self.handles[spec.task_id] = FakeHandle()
        return handle


class Results(dict[str, pb.TaskResult]):
    def __call__(self, result: pb.TaskResult) -> None:
        self[result.task_id] = result


@pytest.fixture
def results() -> Results:
    return Results()


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def manager(tmp_path: Path, runtime: FakeRuntime, results: Results) -> TaskManager:
    return TaskManager(
        "w1",
        TOTALS,
        tmp_path,
        ResultSpool(tmp_path / "results"),
        runtime,
        runtime,
        kill_grace=GRACE,
        on_result=results,
    )


def task(task_id: str = "t1", **kwargs: Any) -> pb.Task:
    return pb.Task(task_id=task_id, command="work", **kwargs)


async def test_a_task_at_its_time_limit_is_stopped_and_reported_timed_out(
    manager: TaskManager, runtime: FakeRuntime, results: Results, eventually: Any
) -> None:
    assert (await manager.assign(task(time_limit_seconds=0.2, attempt=3)))[0]
    await eventually(lambda: "t1" in results, what="the result")
    result = results["t1"]
    assert (result.status, result.reason, result.exit_code, result.attempt) == (
        "failure",
        TIMED_OUT,
        143,
        3,
    )
    assert result.logs == (
        "out\n[cloudai] timed out after 0.2 s; exit code 143 (killed by signal SIGTERM)\n"
    )
    assert runtime.handles["t1"].cancels == [GRACE]  # the usual SIGTERM, then SIGKILL
    assert manager.spool.pending() == [result]  # the spooled copy has reason and attempt


async def test_a_task_that_ends_in_time_is_not_touched(
    manager: TaskManager, runtime: FakeRuntime, results: Results, eventually: Any
) -> None:
    assert (await manager.assign(task(time_limit_seconds=60, attempt=1)))[0]
    await eventually(lambda: "t1" in runtime.handles)
    runtime.handles["t1"].finish(TaskOutcome(0, b"done\n"))
    await eventually(lambda: "t1" in results)
    result = results["t1"]
    assert (result.status, result.reason, result.attempt) == ("success", "", 1)
    assert runtime.handles["t1"].cancels == []


async def test_a_cancel_before_the_limit_stays_a_cancel(
    manager: TaskManager, runtime: FakeRuntime, results: Results, eventually: Any
) -> None:
    assert (await manager.assign(task(time_limit_seconds=0.3)))[0]
    await eventually(lambda: "t1" in runtime.handles)
    assert (await manager.cancel("t1"))[0]
    await eventually(lambda: "t1" in results)
    assert (results["t1"].status, results["t1"].reason) == ("cancelled", "")


async def test_a_runtime_reason_is_reported_for_a_failure_only(
    manager: TaskManager, runtime: FakeRuntime, results: Results, eventually: Any
) -> None:
    for task_id, code in (("oom", 137), ("fine", 0)):
        assert (await manager.assign(task(task_id)))[0]
        await eventually(lambda task_id=task_id: task_id in runtime.handles)
        runtime.handles[task_id].finish(
            TaskOutcome(code, b"", detail="killed by signal SIGKILL", reason="out of memory")
        )
        await eventually(lambda task_id=task_id: task_id in results)
    oom = results["oom"]
    assert (oom.status, oom.reason) == ("failure", "out of memory")
    assert oom.logs.endswith("[cloudai] out of memory: exit code 137 (killed by signal SIGKILL)\n")
    assert (results["fine"].status, results["fine"].reason) == ("success", "")


@pytest.mark.parametrize("limit", [-1.0, float("nan"), float("inf")])
async def test_impossible_time_limits_are_refused(manager: TaskManager, limit: float) -> None:
    ok, message = await manager.assign(task(time_limit_seconds=limit))
    assert not ok
    assert "time_limit_seconds must be a finite number >= 0" in message


async def test_a_real_process_is_stopped_at_its_time_limit(
    tmp_path: Path, results: Results, eventually: Any
) -> None:
    runtime = ProcessRuntime(64 * 1024, kill_grace=GRACE)
    manager = TaskManager(
        "w1",
        TOTALS,
        tmp_path,
        ResultSpool(tmp_path / "r"),
        runtime,
        runtime,
        kill_grace=GRACE,
        on_result=results,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    sleeper = pb.Task(task_id="t1", command="sleep 60", time_limit_seconds=0.5)
    assert (await manager.assign(sleeper))[0]
    await eventually(lambda: "t1" in results, what="the result")
    elapsed = loop.time() - started
    result = results["t1"]
    assert (result.status, result.reason, result.exit_code) == ("failure", TIMED_OUT, 143)
    assert "[cloudai] timed out after 0.5 s; exit code 143" in result.logs
    assert elapsed >= 0.5


def test_an_interrupted_task_keeps_its_attempt(tmp_path: Path) -> None:
    write_marker(tmp_path / "t1", {"task_id": "t1", "attempt": 4})
    marker = json.loads((tmp_path / "t1" / "task.json").read_text())
    assert interrupted_result("w1", marker, tmp_path / "t1", 1024).attempt == 4
    # markers written by an earlier version have no attempt
    assert interrupted_result("w1", {"task_id": "t1"}, tmp_path / "t1", 1024).attempt == 0
