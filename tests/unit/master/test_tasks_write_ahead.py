"""TaskBook, write-ahead: nothing is answered with success before its journal committed
it; a change the journal could not commit is never reported as done."""

from __future__ import annotations

import asyncio

import pytest

from cloudai.api.models import TaskSubmission
from cloudai.master.registry import WorkerRegistry
from cloudai.master.tasks import NotStored, TaskBook, TaskChange, TaskError, TaskState
from cloudai.master.worker_link import WorkerUnavailable
from cloudai.proto import pb
from cloudai.task_status import TaskStatus
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry


class Journal:
    """Records what is committed; can fail, or hold a commit until released."""

    def __init__(self) -> None:
        self.committed: list[TaskChange] = []
        self.later: list[TaskChange] = []
        self.fail_next = 0
        self.hold: asyncio.Event | None = None  # set: commits wait for it
        self.entered = asyncio.Event()

    async def commit(self, change: TaskChange) -> None:
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise NotStored("database error: disk I/O error")
        self.committed.append(change)

    def write_later(self, change: TaskChange) -> None:
        self.later.append(change)

    def kinds(self, task_id: str) -> list[str]:
        out = []
        for change in self.committed:
            if change.task.task_id != task_id:
                continue
            if change.new:
                out.append("new")
            elif change.assignment is not None:
                out.append(f"assignment:{change.task.status}")
            elif change.result:
                out.append(f"result:{change.task.status}")
            else:
                out.append(f"update:{change.task.status}")
        return out


class Link:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.accept = True
        self.reachable = True
        self.assigned: list[str] = []
        self.stored_when_assigned: list[list[str]] = []
        self.on_assign: asyncio.Event | None = None  # AssignTask waits for it
        self.assigning = asyncio.Event()  # set when AssignTask is in flight

    async def assign_task(self, worker_id: str, task: pb.Task) -> pb.TaskAck:
        # What the journal had committed when the worker was asked.
        self.stored_when_assigned.append(self.journal.kinds(task.task_id))
        self.assigned.append(task.task_id)
        self.assigning.set()
        if self.on_assign is not None:
            await self.on_assign.wait()
        if not self.reachable:
            raise WorkerUnavailable(f"worker {worker_id} did not answer AssignTask")
        return pb.TaskAck(success=self.accept, message="accepted" if self.accept else "busy")

    async def cancel_task(self, worker_id: str, task_id: str) -> pb.TaskAck:
        return pb.TaskAck(success=True, message="cancelling")


class Book:
    def __init__(self) -> None:
        self.now = 1000.0
        self.registry = WorkerRegistry(clock=lambda: self.now)
        self.registry.authorise("w1")
        ok, message = self.registry.register(pb.WorkerInfo(worker_id="w1", total_cpu=4))
        assert ok, message
        self.journal = Journal()
        self.link = Link(self.journal)
        self.tasks = TaskBook(
            self.registry,
            self.link,  # type: ignore[arg-type]
            clock=lambda: self.now,
            journal=self.journal,
        )

    async def submit(self, task_id: str = "t1") -> TaskState:
        return await self.tasks.submit(
            TaskSubmission(worker_id="w1", task_id=task_id, command="true")
        )


@pytest.fixture
def book() -> Book:
    return Book()


def result(task_id: str = "t1", status: str = "success", worker_id: str = "w1") -> pb.TaskResult:
    return pb.TaskResult(task_id=task_id, worker_id=worker_id, status=status, logs="ok")


def running(task_id: str) -> WorkerTelemetry:
    return WorkerTelemetry(
        worker_id="w1",
        running_tasks=[TaskTelemetry(task_id=task_id)],
        last_update=1001.0,
    )


async def test_the_task_is_stored_before_assign_task_and_the_outcome_before_the_answer(
    book: Book,
) -> None:
    task = await book.tasks.submit(TaskSubmission(worker_id="w1", task_id="t1", command="true"))
    assert book.link.stored_when_assigned == [["new"]]
    assert book.journal.kinds("t1") == ["new", "assignment:assigned"]
    (_, change) = book.journal.committed
    assert change.assignment is not None and change.assignment.acknowledged
    assert task.status is TaskStatus.ASSIGNED


async def test_submit_answers_only_after_the_commit(book: Book) -> None:
    book.journal.hold = asyncio.Event()
    submit = asyncio.ensure_future(book.submit())
    await book.journal.entered.wait()
    assert not submit.done()
    with pytest.raises(TaskError):  # nothing visible before it is committed
        book.tasks.get("t1")
    assert book.link.assigned == []
    book.journal.hold.set()
    await submit
    assert book.tasks.get("t1").status is TaskStatus.ASSIGNED


async def test_a_task_the_store_refuses_is_not_accepted_nor_sent(book: Book) -> None:
    book.journal.fail_next = 1
    with pytest.raises(TaskError) as refused:
        await book.submit()
    assert refused.value.kind == "unavailable"
    assert "could not record" in str(refused.value)
    assert book.link.assigned == []
    assert book.tasks.list() == []
    await book.submit()  # the id is free again
    assert book.tasks.get("t1").status is TaskStatus.ASSIGNED


async def test_the_same_id_submitted_twice_at_once_is_one_task(book: Book) -> None:
    book.journal.hold = asyncio.Event()
    first = asyncio.ensure_future(book.submit())
    await book.journal.entered.wait()
    with pytest.raises(TaskError) as conflict:
        await book.submit()
    assert conflict.value.kind == "conflict"
    book.journal.hold.set()
    await first
    assert book.link.assigned == ["t1"]


async def test_an_assignment_outcome_not_stored_is_no_success(book: Book) -> None:
    async def fail_the_outcome(worker_id: str, task: pb.Task) -> pb.TaskAck:
        book.journal.fail_next = 1
        return pb.TaskAck(success=True, message="accepted")

    book.link.assign_task = fail_the_outcome  # type: ignore[method-assign]
    with pytest.raises(TaskError) as refused:
        await book.submit()
    assert refused.value.kind == "unavailable"
    assert "could not record the outcome" in str(refused.value)
    # The worker has it: the book knows, and the outcome is queued to be written behind.
    assert book.tasks.get("t1").status is TaskStatus.ASSIGNED
    (later,) = book.journal.later
    assert later.assignment is not None and later.task.status is TaskStatus.ASSIGNED


async def test_an_unreachable_worker_rejects_the_stored_task(book: Book) -> None:
    book.link.reachable = False
    with pytest.raises(TaskError) as refused:
        await book.submit()
    assert refused.value.kind == "unavailable"
    assert book.journal.kinds("t1") == ["new", "assignment:rejected"]
    assert book.tasks.get("t1").status is TaskStatus.REJECTED


async def test_a_result_is_acknowledged_only_once_committed(book: Book) -> None:
    await book.submit()
    book.journal.fail_next = 1
    with pytest.raises(TaskError) as refused:
        await book.tasks.record_result(result())
    assert refused.value.kind == "unavailable"
    task = book.tasks.get("t1")
    assert task.status is TaskStatus.ASSIGNED and task.finished_at is None
    # The worker delivers it again: stored now, then a duplicate is acknowledged as is.
    assert await book.tasks.record_result(result()) == (True, "result recorded")
    assert await book.tasks.record_result(result()) == (True, "result already recorded")
    assert book.journal.kinds("t1") == ["new", "assignment:assigned", "result:success"]
    assert book.tasks.get("t1").logs == "ok"


async def test_duplicate_deliveries_racing_commit_one_result(book: Book) -> None:
    await book.submit()
    book.journal.hold = asyncio.Event()
    book.journal.entered.clear()
    first = asyncio.ensure_future(book.tasks.record_result(result()))
    second = asyncio.ensure_future(book.tasks.record_result(result(status="failure")))
    await book.journal.entered.wait()
    book.journal.hold.set()
    assert await first == (True, "result recorded")
    assert await second == (True, "result already recorded")
    assert book.journal.kinds("t1") == ["new", "assignment:assigned", "result:success"]


async def test_results_the_master_did_not_issue_are_refused(book: Book) -> None:
    await book.submit()
    assert (await book.tasks.record_result(result("nope")))[0] is False
    assert (await book.tasks.record_result(result(worker_id="w2")))[0] is False
    assert book.journal.kinds("t1") == ["new", "assignment:assigned"]


async def test_a_result_before_the_assignment_outcome_is_not_overwritten(book: Book) -> None:
    book.link.on_assign = asyncio.Event()
    submit = asyncio.ensure_future(book.submit())
    await book.link.assigning.wait()
    assert await book.tasks.record_result(result()) == (True, "result recorded")
    book.link.on_assign.set()
    task = await submit
    assert task.status is TaskStatus.SUCCESS
    assert book.journal.kinds("t1") == ["new", "result:success", "assignment:success"]


async def test_running_is_written_behind_and_never_overtakes_a_change_in_flight(
    book: Book,
) -> None:
    await book.submit()
    book.tasks.on_telemetry(running("t1"), TelemetryEvent.UPDATE)
    assert book.tasks.get("t1").status is TaskStatus.RUNNING
    (later,) = book.journal.later
    assert later.task.status is TaskStatus.RUNNING and later.task.started_at == 1001.0

    await book.submit("t2")
    book.journal.hold = asyncio.Event()
    book.journal.entered.clear()
    recording = asyncio.ensure_future(book.tasks.record_result(result("t2")))
    await book.journal.entered.wait()
    book.tasks.on_telemetry(running("t2"), TelemetryEvent.UPDATE)  # t2 is busy: left alone
    assert len(book.journal.later) == 1
    book.journal.hold.set()
    await recording
    assert book.tasks.get("t2").status is TaskStatus.SUCCESS


async def test_a_cancellation_is_committed_before_the_answer(book: Book) -> None:
    await book.submit()
    book.journal.fail_next = 1
    with pytest.raises(TaskError) as refused:
        await book.tasks.cancel("t1")
    assert refused.value.kind == "unavailable"
    assert book.tasks.get("t1").message == "accepted"
    task = await book.tasks.cancel("t1")
    assert task.message == "cancelling"
    assert book.journal.kinds("t1")[-1] == "update:assigned"
    assert book.journal.committed[-1].task.message == "cancelling"
