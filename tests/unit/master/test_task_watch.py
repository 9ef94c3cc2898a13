"""The task book's watch: lost tasks, tasks waiting for their worker, and heartbeats that
speak only for their own worker. Real registry and task book; the gRPC calls to workers
are a small fake; the clock is injected."""

from __future__ import annotations

import asyncio

from cloudai.api.models import TaskSubmission
from cloudai.master.registry import WorkerRegistry
from cloudai.master.tasks import TaskBook
from cloudai.proto import pb
from cloudai.task_status import TaskStatus
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry


class Link:
    def __init__(self) -> None:
        self.assigned: list[str] = []

    async def assign_task(self, worker_id: str, task: pb.Task) -> pb.TaskAck:
        self.assigned.append(task.task_id)
        return pb.TaskAck(success=True, message="accepted")

    async def cancel_task(self, worker_id: str, task_id: str) -> pb.TaskAck:
        return pb.TaskAck(success=True, message="cancelling")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def book() -> tuple[TaskBook, WorkerRegistry, Link, Clock]:
    clock, registry, link = Clock(), WorkerRegistry(), Link()
    tasks = TaskBook(
        registry,
        link,  # type: ignore[arg-type]
        clock=clock,
        start_deadline=30.0,
        vanish_grace=15.0,
        offline_wait=600.0,
    )
    return tasks, registry, link, clock


def connect(registry: WorkerRegistry, worker_id: str) -> None:
    registry.authorise(worker_id)
    ok, message = registry.register(pb.WorkerInfo(worker_id=worker_id))
    assert ok, message


def heartbeat(tasks: TaskBook, worker_id: str, *running: str) -> None:
    state = WorkerTelemetry(
        worker_id, running_tasks=[TaskTelemetry(task_id) for task_id in running], last_update=1.0
    )
    tasks.on_telemetry(state, TelemetryEvent.UPDATE)


async def test_a_task_its_worker_drops_is_lost_by_the_deadline() -> None:
    tasks, registry, _link, clock = book()
    connect(registry, "w1")
    await tasks.submit(TaskSubmission(worker_id="w1", command="true", task_id="t1"))
    heartbeat(tasks, "w1")  # accepted, then dropped: never listed
    clock.now += 29.0
    assert await tasks.check(clock.now) == []
    clock.now += 1.0
    assert list(await tasks.check(clock.now)) == ["t1"]
    task = tasks.get("t1")
    assert task.status is TaskStatus.LOST
    assert "never listed it as running within 30 s" in task.message


async def test_a_running_task_that_vanishes_is_lost_and_a_late_result_still_wins() -> None:
    tasks, registry, _link, clock = book()
    connect(registry, "w1")
    await tasks.submit(TaskSubmission(worker_id="w1", command="true", task_id="t1"))
    heartbeat(tasks, "w1", "t1")
    assert tasks.get("t1").status is TaskStatus.RUNNING
    heartbeat(tasks, "w1")
    clock.now += 15.0
    assert list(await tasks.check(clock.now)) == ["t1"]
    assert "vanished" in tasks.get("t1").message
    ok, _ = await tasks.record_result(
        pb.TaskResult(task_id="t1", worker_id="w1", status="success", exit_code=0)
    )
    assert ok and tasks.get("t1").status is TaskStatus.SUCCESS


async def test_a_result_in_time_is_never_lost() -> None:
    tasks, registry, _link, clock = book()
    connect(registry, "w1")
    await tasks.submit(TaskSubmission(worker_id="w1", command="true", task_id="t1"))
    await tasks.record_result(pb.TaskResult(task_id="t1", worker_id="w1", status="failure"))
    clock.now += 3600.0
    assert await tasks.check(clock.now) == []
    assert tasks.get("t1").status is TaskStatus.FAILURE


async def test_another_workers_heartbeat_does_not_touch_a_task() -> None:
    tasks, registry, _link, clock = book()
    connect(registry, "w1")
    connect(registry, "w2")
    await tasks.submit(TaskSubmission(worker_id="w1", command="true", task_id="t1"))
    heartbeat(tasks, "w2", "t1")
    assert tasks.get("t1").status is TaskStatus.ASSIGNED
    clock.now += 30.0
    assert list(await tasks.check(clock.now)) == ["t1"]  # w2 listing it kept nothing alive


async def test_a_task_waits_for_its_worker_then_goes_to_it() -> None:
    tasks, registry, link, _clock = book()
    registry.authorise("w1")
    waiting = await tasks.submit(TaskSubmission(worker_id="w1", command="true", task_id="t1"))
    assert waiting.status is TaskStatus.QUEUED and link.assigned == []
    connect(registry, "w1")
    tasks.worker_registered("w1")
    for _ in range(20):  # the dispatch runs in its own task
        if link.assigned:
            break
        await asyncio.sleep(0)
    assert link.assigned == ["t1"]
    assert tasks.get("t1").status is TaskStatus.ASSIGNED
    await tasks.close()


async def test_a_task_whose_worker_never_comes_is_lost_after_the_wait() -> None:
    tasks, registry, link, clock = book()
    registry.authorise("w1")
    await tasks.submit(TaskSubmission(worker_id="w1", command="true", task_id="t1"))
    clock.now += 599.0
    assert await tasks.check(clock.now) == []
    clock.now += 1.0
    assert list(await tasks.check(clock.now)) == ["t1"]
    task = tasks.get("t1")
    assert task.status is TaskStatus.LOST and "did not connect in time" in task.message
    tasks.worker_registered("w1")
    await tasks.close()
    assert link.assigned == []
