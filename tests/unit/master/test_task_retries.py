"""Time limits and retries in the task book: a failed, timed-out or lost task with
retries left runs again as its next attempt; each finished attempt is kept; a stale
result of an earlier attempt changes nothing. Real registry and task book; a fake link;
the clock is injected; the retry back-off is 0 so the next attempt is handed out on the
loop's next turns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from cloudai.api.models import TaskSubmission
from cloudai.master.cluster_admin import task_model
from cloudai.master.registry import WorkerRegistry
from cloudai.master.tasks import TaskBook, TaskChange, result_event
from cloudai.proto import pb
from cloudai.task_lifecycle import TaskEvent
from cloudai.task_status import TaskStatus
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry


class Link:
    def __init__(self) -> None:
        self.sent: list[pb.Task] = []

    async def assign_task(self, worker_id: str, task: pb.Task) -> pb.TaskAck:
        self.sent.append(task)
        return pb.TaskAck(success=True, message="accepted")

    async def cancel_task(self, worker_id: str, task_id: str) -> pb.TaskAck:
        return pb.TaskAck(success=True, message="cancelling")


class Journal:
    def __init__(self) -> None:
        self.changes: list[TaskChange] = []

    async def commit(self, change: TaskChange) -> None:
        self.changes.append(change)

    def write_later(self, change: TaskChange) -> None:
        self.changes.append(change)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Let the loop run until ``condition`` holds (the retry runs in its own task)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def book(
    retry_delay: float = 0.0, workers: tuple[str, ...] = ("w1",)
) -> tuple[TaskBook, Link, Journal, Clock]:
    clock, registry, link, journal = Clock(), WorkerRegistry(), Link(), Journal()
    for worker_id in workers:
        registry.authorise(worker_id)
        ok, message = registry.register(pb.WorkerInfo(worker_id=worker_id))
        assert ok, message
    tasks = TaskBook(
        registry,
        link,  # type: ignore[arg-type]
        clock=clock,
        journal=journal,
        start_deadline=30.0,
        vanish_grace=15.0,
        retry_delay=retry_delay,
    )
    return tasks, link, journal, clock


def result(status: str, attempt: int, reason: str = "", code: int = 1) -> pb.TaskResult:
    return pb.TaskResult(
        task_id="t1",
        worker_id="w1",
        status=status,
        exit_code=code,
        logs=f"run {attempt}\n",
        reason=reason,
        attempt=attempt,
    )


def test_what_a_result_says() -> None:
    assert result_event(result("success", 1)) is TaskEvent.SUCCEEDED
    assert result_event(result("failure", 1)) is TaskEvent.FAILED
    assert result_event(result("failure", 1, "timed out")) is TaskEvent.TIMED_OUT
    assert result_event(result("failure", 1, "out of memory")) is TaskEvent.FAILED
    assert result_event(result("cancelled", 1)) is TaskEvent.CANCELLED
    assert result_event(result("exploded", 1)) is TaskEvent.FAILED


async def test_the_worker_gets_the_time_limit_and_the_attempt() -> None:
    tasks, link, _journal, _clock = book()
    await tasks.submit(
        TaskSubmission(worker_id="w1", command="sleep 60", task_id="t1", time_limit=2)
    )
    assert link.sent[0].time_limit_seconds == 2.0 and link.sent[0].attempt == 1


async def test_a_timed_out_task_without_retries_ends_timed_out() -> None:
    tasks, _link, journal, _clock = book()
    await tasks.submit(TaskSubmission(worker_id="w1", command="sleep 60", task_id="t1"))
    ok, _ = await tasks.record_result(result("failure", 1, "timed out", code=143))
    task = tasks.get("t1")
    assert ok and task.status is TaskStatus.TIMED_OUT and task.exit_code == 143
    assert task.message == "timed out (reported by w1)"
    assert journal.changes[-1].result and journal.changes[-1].result_reason == "timed out"
    # a second delivery of the same result is acknowledged and changes nothing
    count = len(journal.changes)
    assert await tasks.record_result(result("failure", 1, "timed out")) == (
        True,
        "result already recorded",
    )
    assert len(journal.changes) == count


async def test_a_failing_task_with_two_retries_runs_three_times() -> None:
    tasks, link, journal, _clock = book()
    await tasks.submit(TaskSubmission(worker_id="w1", command="false", task_id="t1", retries=2))
    for attempt in (1, 2):
        ok, message = await tasks.record_result(result("failure", attempt))
        assert ok and message == "result recorded; the task runs again"
        task = tasks.get("t1")
        assert task.status is TaskStatus.QUEUED and task.attempt == attempt + 1
        assert f"running it again (attempt {attempt + 1} of 3)" in task.message
        await until(lambda n=attempt: len(link.sent) == n + 1)
        assert link.sent[-1].attempt == attempt + 1
        assert tasks.get("t1").status is TaskStatus.ASSIGNED
    await tasks.record_result(result("failure", 3))
    task = tasks.get("t1")
    assert task.status is TaskStatus.FAILURE and task.attempt == 3
    assert [(a.attempt, a.status) for a in task.attempts] == [
        (1, TaskStatus.FAILURE),
        (2, TaskStatus.FAILURE),
    ]
    assert all(a.logs == "" for a in task.attempts)  # the book keeps them without logs
    stored = [c.finished_attempt for c in journal.changes if c.finished_attempt]
    assert [(a.attempt, a.logs) for a in stored] == [(1, "run 1\n"), (2, "run 2\n")]
    assert task.logs == "run 3\n"


async def test_success_on_a_retry_ends_the_task() -> None:
    tasks, link, _journal, _clock = book()
    await tasks.submit(TaskSubmission(worker_id="w1", command="flaky", task_id="t1", retries=5))
    await tasks.record_result(result("failure", 1, "timed out"))
    await until(lambda: len(link.sent) == 2)
    await tasks.record_result(result("success", 2, code=0))
    task = tasks.get("t1")
    assert task.status is TaskStatus.SUCCESS and task.attempt == 2
    assert [a.status for a in task.attempts] == [TaskStatus.TIMED_OUT]


async def test_a_late_result_of_an_earlier_attempt_changes_nothing() -> None:
    tasks, link, _journal, _clock = book()
    await tasks.submit(TaskSubmission(worker_id="w1", command="x", task_id="t1", retries=1))
    await tasks.record_result(result("failure", 1))
    await until(lambda: len(link.sent) == 2)
    ok, message = await tasks.record_result(result("success", 1, code=0))
    assert ok and "attempt 1 ignored" in message
    assert tasks.get("t1").status is TaskStatus.ASSIGNED


async def test_a_cancelled_task_is_not_retried() -> None:
    tasks, link, _journal, _clock = book()
    await tasks.submit(TaskSubmission(worker_id="w1", command="x", task_id="t1", retries=3))
    await tasks.record_result(result("cancelled", 1))
    assert tasks.get("t1").status is TaskStatus.CANCELLED and len(link.sent) == 1


async def test_a_task_waiting_for_its_next_attempt_is_cancelled_by_the_master() -> None:
    tasks, link, _journal, _clock = book(retry_delay=3600.0)
    await tasks.submit(TaskSubmission(worker_id="w1", command="x", task_id="t1", retries=3))
    await tasks.record_result(result("failure", 1))
    task = await tasks.cancel("t1")
    assert task.status is TaskStatus.CANCELLED
    assert task.message == "cancelled before attempt 2 was handed to its worker"
    await tasks.close()  # the pending retry is dropped
    assert len(link.sent) == 1


async def test_a_lost_task_with_retries_runs_again() -> None:
    tasks, link, journal, clock = book()
    await tasks.submit(TaskSubmission(worker_id="w1", command="x", task_id="t1", retries=1))
    running = WorkerTelemetry("w1", running_tasks=[TaskTelemetry("t1")], last_update=1.0)
    tasks.on_telemetry(running, TelemetryEvent.UPDATE)
    tasks.on_telemetry(WorkerTelemetry("w1", last_update=2.0), TelemetryEvent.UPDATE)
    clock.now += 15.0
    assert list(await tasks.check(clock.now)) == ["t1"]
    task = tasks.get("t1")
    assert task.status is TaskStatus.QUEUED and task.attempt == 2
    assert task.attempts[0].status is TaskStatus.LOST
    assert "vanished" in task.attempts[0].message
    await until(lambda: len(link.sent) == 2)
    # lost again with no retries left: lost for good
    clock.now += 30.0
    assert list(await tasks.check(clock.now)) == ["t1"]
    assert tasks.get("t1").status is TaskStatus.LOST
    assert sum(1 for c in journal.changes if c.finished_attempt) == 1


@pytest.mark.parametrize("retries", [0, 1])
async def test_a_result_from_a_peer_that_does_not_count_attempts(retries: int) -> None:
    tasks, _link, _journal, _clock = book()
    await tasks.submit(TaskSubmission(worker_id="w1", command="x", task_id="t1", retries=retries))
    ok, _ = await tasks.record_result(result("success", 0, code=0))  # a Go worker: attempt 0
    assert ok and tasks.get("t1").status is TaskStatus.SUCCESS


class Placer:
    """Placement as ClusterAdmin does it, over a fixed list of fitting workers."""

    def __init__(self, fitting: list[str]) -> None:
        self.fitting = fitting
        self.asked: list[frozenset[str]] = []

    def __call__(self, task: object, tried: frozenset[str]) -> str | None:
        self.asked.append(tried)
        elsewhere = [w for w in self.fitting if w not in tried]
        return (elsewhere or self.fitting or [None])[0]


async def test_a_retry_of_a_task_placed_by_the_master_goes_to_another_worker() -> None:
    tasks, link, journal, _clock = book(workers=("w1", "w2"))
    placer = Placer(["w1", "w2"])
    tasks.set_placer(placer)
    submission = TaskSubmission(worker_id="w1", command="false", task_id="t1", retries=2)
    assert (await tasks.submit(submission, placed=True)).any_worker
    await tasks.record_result(result("failure", 1))
    await until(lambda: len(link.sent) == 2)
    assert link.sent[-1].target_worker_id == "w2" and placer.asked == [frozenset({"w1"})]
    task = tasks.get("t1")
    assert task.target_worker_id == "w2" and task.status is TaskStatus.ASSIGNED
    moved = [c.task for c in journal.changes if c.task.target_worker_id == "w2"]
    assert moved and moved[0].status is TaskStatus.QUEUED  # stored before it is handed over
    # its result now comes from w2; a third attempt, both tried: placement's first choice
    w2_failed = pb.TaskResult(task_id="t1", worker_id="w2", status="failure", attempt=2)
    await tasks.record_result(w2_failed)
    await until(lambda: len(link.sent) == 3)
    assert link.sent[-1].target_worker_id == "w1"
    assert [a.worker_id for a in tasks.get("t1").attempts] == ["w1", "w2"]


async def test_a_retry_stays_put_when_nothing_else_fits_or_the_worker_was_named() -> None:
    tasks, link, _journal, _clock = book(workers=("w1", "w2"))
    tasks.set_placer(Placer([]))  # no active worker fits: it waits for its own
    await tasks.submit(
        TaskSubmission(worker_id="w1", command="x", task_id="t1", retries=1), placed=True
    )
    await tasks.record_result(result("failure", 1))
    await until(lambda: len(link.sent) == 2)
    assert link.sent[-1].target_worker_id == "w1"
    named = Placer(["w2"])
    tasks.set_placer(named)
    await tasks.submit(TaskSubmission(worker_id="w1", command="x", task_id="t2", retries=1))
    failed = pb.TaskResult(task_id="t2", worker_id="w1", status="failure", attempt=1)
    await tasks.record_result(failed)
    await until(lambda: len(link.sent) == 4)
    assert link.sent[-1].target_worker_id == "w1" and named.asked == []


async def test_when_the_next_attempt_is_due_is_stored_with_it() -> None:
    tasks, link, journal, clock = book(retry_delay=2.0)
    await tasks.submit(TaskSubmission(worker_id="w1", command="x", task_id="t1", retries=1))
    await tasks.record_result(result("failure", 1))
    (queued,) = [c.task for c in journal.changes if c.finished_attempt]
    assert queued.status is TaskStatus.QUEUED and queued.retry_at == clock.now + 2.0
    assert tasks.get("t1").retry_at == clock.now + 2.0
    assert task_model(tasks.get("t1")).retry_at == clock.now + 2.0  # shown in the API
    await tasks.close()
    assert len(link.sent) == 1


async def test_the_next_attempt_is_marked_handed_over_before_it_is_sent() -> None:
    tasks, link, journal, _clock = book()
    await tasks.submit(TaskSubmission(worker_id="w1", command="x", task_id="t1", retries=1))
    await tasks.record_result(result("failure", 1))
    await until(lambda: len(link.sent) == 2)
    changes = journal.changes[[bool(c.finished_attempt) for c in journal.changes].index(True) :]
    queued, marked, assigned = changes
    assert queued.task.retry_at is not None
    assert (marked.task.status, marked.task.retry_at, marked.assignment) == (
        TaskStatus.QUEUED,
        None,
        None,
    )
    assert assigned.assignment is not None and assigned.task.status is TaskStatus.ASSIGNED
    assert tasks.get("t1").retry_at is None
    assert task_model(tasks.get("t1")).retry_at is None
