"""MasterPersistence + TaskBook on a real SQLite file: what the master answers with
success is committed (another connection, as a restarted master, sees it); what the
store could not take is never answered with success."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudai.api.models import TaskSubmission
from cloudai.master.persistence import UNCONFIRMED, MasterPersistence
from cloudai.master.registry import WorkerRegistry
from cloudai.master.tasks import TaskBook, TaskError
from cloudai.proto import pb
from cloudai.store import TaskRecord, open_store
from cloudai.task_status import TaskStatus
from tests.breakable_store import BreakableStore, open_breakable, reopen


class Link:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.seen_stored: list[str | None] = []

    async def assign_task(self, worker_id: str, task: pb.Task) -> pb.TaskAck:
        with reopen(self.tmp_path) as other:
            record = other.get_task(task.task_id)
        self.seen_stored.append(None if record is None else record.status)
        return pb.TaskAck(success=True, message="accepted")

    async def cancel_task(self, worker_id: str, task_id: str) -> pb.TaskAck:
        return pb.TaskAck(success=True, message="cancelling")


@dataclass
class Master:
    store: BreakableStore
    persistence: MasterPersistence
    registry: WorkerRegistry
    tasks: TaskBook
    link: Link


async def start(tmp_path: Path) -> Master:
    store = open_breakable(tmp_path)
    registry = WorkerRegistry()
    link = Link(tmp_path)
    tasks = TaskBook(registry, link)  # type: ignore[arg-type]
    persistence = MasterPersistence(store, heartbeat_flush_interval=60.0)
    await persistence.load(registry, tasks)
    persistence.attach(registry, tasks)
    persistence.start()
    registry.authorise("w1")
    ok, message = registry.register(pb.WorkerInfo(worker_id="w1", total_cpu=4))
    assert ok, message
    return Master(store, persistence, registry, tasks, link)


@pytest.fixture
async def master(tmp_path: Path) -> AsyncIterator[Master]:
    master = await start(tmp_path)
    yield master
    await master.persistence.stop()


async def test_an_answered_submission_and_result_are_committed(
    master: Master, tmp_path: Path
) -> None:
    task = await master.tasks.submit(TaskSubmission(worker_id="w1", task_id="t1", command="x"))
    assert task.status is TaskStatus.ASSIGNED
    assert master.link.seen_stored == ["queued"]  # stored before AssignTask
    with reopen(tmp_path) as other:
        record = other.get_task("t1")
        assert record is not None and record.status == "assigned"
        (assignment,) = other.list_assignments("t1")
        assert assignment.acknowledged and assignment.message == "accepted"

    result = pb.TaskResult(task_id="t1", worker_id="w1", status="failure", exit_code=3)
    assert await master.tasks.record_result(result) == (True, "result recorded")
    with reopen(tmp_path) as other:
        record = other.get_task("t1")
        assert record is not None and record.status == "failure"
        assert record.finished_at is not None
        stored = other.get_result("t1")
        assert stored is not None and stored.exit_code == 3


async def test_a_cancellation_is_committed(master: Master, tmp_path: Path) -> None:
    await master.tasks.submit(TaskSubmission(worker_id="w1", task_id="t1", command="x"))
    await master.tasks.cancel("t1")
    with reopen(tmp_path) as other:
        record = other.get_task("t1")
        assert record is not None and record.message == "cancelling"


async def test_nothing_is_acknowledged_while_the_store_fails(
    master: Master, tmp_path: Path
) -> None:
    await master.tasks.submit(TaskSubmission(worker_id="w1", task_id="t1", command="x"))
    master.store.broken = True
    with pytest.raises(TaskError) as refused:
        await master.tasks.submit(TaskSubmission(worker_id="w1", task_id="t2", command="x"))
    assert refused.value.kind == "unavailable"
    result = pb.TaskResult(task_id="t1", worker_id="w1", status="success")
    with pytest.raises(TaskError) as refused:
        await master.tasks.record_result(result)
    assert refused.value.kind == "unavailable"
    master.store.broken = False
    assert await master.tasks.record_result(result) == (True, "result recorded")
    with reopen(tmp_path) as other:
        assert other.get_task("t2") is None
        assert other.get_result("t1") is not None


async def test_a_task_stored_before_a_crash_but_not_its_assignment(tmp_path: Path) -> None:
    # What a master killed between storing a task and storing AssignTask's outcome left.
    with open_store(None, tmp_path) as before:
        before.add_task(TaskRecord("t1", "w1", command="x"))
        before.add_task(TaskRecord("t2", "w1", command="x"))
    master = await start(tmp_path)
    try:
        for task_id in ("t1", "t2"):
            task = master.tasks.get(task_id)
            assert (task.status, task.message) == (TaskStatus.QUEUED, UNCONFIRMED)
        with reopen(tmp_path) as other:
            record = other.get_task("t1")
            assert record is not None and record.message == UNCONFIRMED
        # The worker had it: its result is accepted and stored.
        result = pb.TaskResult(task_id="t1", worker_id="w1", status="success")
        assert await master.tasks.record_result(result) == (True, "result recorded")
        with reopen(tmp_path) as other:
            record = other.get_task("t1")
            assert record is not None and record.status == "success"
    finally:
        await master.persistence.stop()
