"""A task waiting for its next attempt (its back-off running) when the master stops: the
restarted master hands that attempt over when the back-off ends (at once if it has
ended), instead of waiting for a worker that never had it and calling the attempt lost.
MasterPersistence + TaskBook on a real SQLite file, a fake link, an injected clock (the
remaining back-off is made short: the loop really sleeps it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloudai.api.models import TaskSubmission
from cloudai.master.persistence import UNCONFIRMED, MasterPersistence
from cloudai.master.registry import WorkerRegistry
from cloudai.master.tasks import TaskBook, TaskState
from cloudai.proto import pb
from cloudai.store import TaskRecord
from cloudai.task_status import TaskStatus
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry
from tests.breakable_store import BreakableStore, open_breakable, reopen
from tests.harness import async_wait_until

BACKOFF = 20.0  # the first retry's back-off (retry_delay; at most 30 s)
T0 = 1_000_000.0


def stored(tmp_path: Path, task_id: str = "t1") -> TaskRecord:
    with reopen(tmp_path) as other:
        record = other.get_task(task_id)
    assert record is not None
    return record


class Link:
    """Accepts every task; notes what the store held when AssignTask went out."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.sent: list[pb.Task] = []
        self.retry_at_when_sent: list[datetime | None] = []
        self.cancels: list[str] = []

    async def assign_task(self, worker_id: str, task: pb.Task) -> pb.TaskAck:
        self.sent.append(task)
        self.retry_at_when_sent.append(stored(self.tmp_path, task.task_id).retry_at)
        return pb.TaskAck(success=True, message="accepted")

    async def cancel_task(self, worker_id: str, task_id: str) -> pb.TaskAck:
        self.cancels.append(task_id)
        return pb.TaskAck(success=False, message=f"worker {worker_id} has no task {task_id}")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Placer:
    """Placement over the workers that hold a session, avoiding those tried."""

    def __init__(self, registry: WorkerRegistry) -> None:
        self.registry = registry

    def __call__(self, task: TaskState, tried: frozenset[str]) -> str | None:
        fitting = sorted(e.worker_id for e in self.registry if e.session)
        elsewhere = [w for w in fitting if w not in tried]
        return next(iter(elsewhere or fitting), None)


@dataclass
class Master:
    store: BreakableStore
    persistence: MasterPersistence
    registry: WorkerRegistry
    tasks: TaskBook
    link: Link
    clock: Clock
    stopped: bool = field(default=False)

    def connect(self, worker_id: str) -> None:
        """What RegisterWorker does: a session, then the task book hears of it."""
        ok, message = self.registry.register(pb.WorkerInfo(worker_id=worker_id, total_cpu=4))
        assert ok, message
        self.tasks.worker_registered(worker_id)

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.tasks.close()
            await self.persistence.stop()


async def start(
    tmp_path: Path,
    now: float,
    connect: Iterable[str] = ("w1",),
    authorise: Iterable[str] = (),
    retry_delay: float = BACKOFF,
) -> Master:
    store = open_breakable(tmp_path)
    registry = WorkerRegistry()
    link = Link(tmp_path)
    clock = Clock(now)
    tasks = TaskBook(registry, link, clock=clock, retry_delay=retry_delay)  # type: ignore[arg-type]
    tasks.set_placer(Placer(registry))
    persistence = MasterPersistence(store, heartbeat_flush_interval=60.0)
    await persistence.load(registry, tasks)
    persistence.attach(registry, tasks)
    persistence.start()
    for worker_id in (*connect, *authorise):
        registry.authorise(worker_id)
    master = Master(store, persistence, registry, tasks, link, clock)
    for worker_id in connect:
        master.connect(worker_id)
    tasks.start()
    return master


async def until(condition: Callable[[], bool]) -> None:
    await async_wait_until(condition, 10.0)


def failed(attempt: int, worker_id: str = "w1") -> pb.TaskResult:
    return pb.TaskResult(
        task_id="t1", worker_id=worker_id, status="failure", exit_code=1, attempt=attempt
    )


async def first_attempt_failed(
    tmp_path: Path, *, any_worker: bool = False, workers: Sequence[str] = ("w1",)
) -> None:
    """A master (clock at T0) runs t1's first attempt, which fails, then stops while the
    second attempt waits for its back-off (due at T0 + BACKOFF)."""
    master = await start(tmp_path, T0, connect=workers)
    try:
        request = TaskSubmission(worker_id="w1", task_id="t1", command="x", retries=2)
        await master.tasks.submit(request, placed=any_worker)
        assert await master.tasks.record_result(failed(1)) == (
            True,
            "result recorded; the task runs again",
        )
        assert len(master.link.sent) == 1  # the back-off runs
    finally:
        await master.stop()
    record = stored(tmp_path)
    assert (record.status, record.attempt) == ("queued", 2)
    assert record.retry_at == datetime.fromtimestamp(T0 + BACKOFF, UTC)


@pytest.mark.parametrize("left", [0.3, 0.0, -5.0], ids=["back-off left", "due", "overdue"])
async def test_a_retry_waiting_at_a_restart_is_handed_over_when_due(
    tmp_path: Path, left: float
) -> None:
    await first_attempt_failed(tmp_path)
    master = await start(tmp_path, T0 + BACKOFF - left)
    try:
        task = master.tasks.get("t1")
        assert task.status is TaskStatus.QUEUED and task.attempt == 2
        assert task.message != UNCONFIRMED and "running it again (attempt 2 of 3)" in task.message
        assert stored(tmp_path).message == task.message
        if left > 0:
            assert master.link.sent == []  # not before the back-off ends
        await until(lambda: master.tasks.get("t1").status is TaskStatus.ASSIGNED)
        assert [(t.task_id, t.attempt) for t in master.link.sent] == [("t1", 2)]
        assert master.link.retry_at_when_sent == [None]  # marked handed over first
        # It is no "unconfirmed" task: it is never called lost for want of a report.
        master.clock.now += 10.0
        assert await master.tasks.check(master.clock.now) == []
        # Its run is the second attempt, and it succeeds.
        ok, _ = await master.tasks.record_result(
            pb.TaskResult(task_id="t1", worker_id="w1", status="success", attempt=2)
        )
        task = master.tasks.get("t1")
        assert ok and task.status is TaskStatus.SUCCESS and task.attempt == 2
        assert [(a.attempt, a.status) for a in task.attempts] == [(1, TaskStatus.FAILURE)]
    finally:
        await master.stop()


async def test_a_retry_handed_over_before_a_crash_is_unconfirmed(tmp_path: Path) -> None:
    # The second attempt was marked handed over (retry_at cleared, committed) and the
    # master stopped before AssignTask's outcome was stored: the worker may have it.
    await first_attempt_failed(tmp_path)
    with reopen(tmp_path) as store:
        assert store.update_task("t1", retry_at=None)
    master = await start(tmp_path, T0 + 2 * BACKOFF)
    try:
        task = master.tasks.get("t1")
        assert (task.status, task.message, task.attempt) == (TaskStatus.QUEUED, UNCONFIRMED, 2)
        assert stored(tmp_path).message == UNCONFIRMED
        master.clock.now += 31.0  # never listed by its worker: lost, and run again
        assert await master.tasks.check(master.clock.now) == ["t1"]
        task = master.tasks.get("t1")
        assert task.attempt == 3 and task.attempts[-1].status is TaskStatus.LOST
    finally:
        await master.stop()


async def test_a_retry_waits_for_its_worker_after_a_restart(tmp_path: Path) -> None:
    await first_attempt_failed(tmp_path)
    master = await start(tmp_path, T0 + 2 * BACKOFF, connect=(), authorise=("w1",))
    try:
        await until(lambda: "t1" in master.tasks._waiting.get("w1", {}))
        assert master.link.sent == [] and stored(tmp_path).retry_at is not None
        master.connect("w1")
        await until(lambda: master.tasks.get("t1").status is TaskStatus.ASSIGNED)
        assert [t.attempt for t in master.link.sent] == [2]
    finally:
        await master.stop()


async def test_a_waiting_retry_is_cancelled_without_its_worker(tmp_path: Path) -> None:
    await first_attempt_failed(tmp_path)
    master = await start(tmp_path, T0 + 1.0)  # 19 s of back-off left
    try:
        task = await master.tasks.cancel("t1")
        assert task.status is TaskStatus.CANCELLED and master.link.cancels == []
        assert task.message == "cancelled before attempt 2 was handed to its worker"
        record = stored(tmp_path)
        assert record.status == "cancelled" and record.retry_at is None
    finally:
        await master.stop()
    assert master.link.sent == []


async def test_a_stale_listing_does_not_start_a_waiting_retry(tmp_path: Path) -> None:
    await first_attempt_failed(tmp_path)
    master = await start(tmp_path, T0 + 1.0)
    try:
        # A heartbeat still listing the first attempt (it ended): no worker runs the second.
        listing = WorkerTelemetry("w1", running_tasks=[TaskTelemetry("t1")], last_update=T0)
        master.tasks.on_telemetry(listing, TelemetryEvent.UPDATE)
        assert master.tasks.get("t1").status is TaskStatus.QUEUED
    finally:
        await master.stop()


async def test_an_any_worker_retry_is_placed_again_after_a_restart(tmp_path: Path) -> None:
    await first_attempt_failed(tmp_path, any_worker=True, workers=("w1", "w2"))
    # Restarted with its back-off over, before any worker is back: it waits for its worker;
    # once workers register it is placed again, away from w1 (its first attempt's worker).
    master = await start(tmp_path, T0 + 2 * BACKOFF, connect=(), authorise=("w1", "w2"))
    try:
        await until(lambda: "t1" in master.tasks._waiting.get("w1", {}))
        master.connect("w2")
        await until(lambda: master.tasks.get("t1").status is TaskStatus.ASSIGNED)
        assert [(t.target_worker_id, t.attempt) for t in master.link.sent] == [("w2", 2)]
        record = stored(tmp_path)
        assert (record.target_worker_id, record.status, record.retry_at) == ("w2", "assigned", None)
        assert "t1" not in master.tasks._waiting.get("w1", {})
    finally:
        await master.stop()


async def test_a_burst_of_registrations_places_a_waiting_retry_once(tmp_path: Path) -> None:
    await first_attempt_failed(tmp_path, any_worker=True, workers=("w1", "w2"))
    master = await start(tmp_path, T0 + 2 * BACKOFF, connect=(), authorise=("w1", "w2", "w3", "w4"))
    try:
        await until(lambda: "t1" in master.tasks._waiting.get("w1", {}))
        placements = []
        placer = Placer(master.registry)

        def counted(task: TaskState, tried: frozenset[str]) -> str | None:
            placements.append(task.task_id)
            return placer(task, tried)

        master.tasks.set_placer(counted)
        for worker_id in ("w2", "w3", "w4"):  # workers coming back together
            master.connect(worker_id)
        await until(lambda: master.tasks.get("t1").status is TaskStatus.ASSIGNED)
        assert placements == ["t1"]
        assert [t.attempt for t in master.link.sent] == [2]
    finally:
        await master.stop()


async def test_a_handover_the_store_cannot_record_is_not_sent(tmp_path: Path) -> None:
    await first_attempt_failed(tmp_path)
    # (retry_delay 1 s: a handover not stored is tried again after 1 s)
    master = await start(tmp_path, T0 + 2 * BACKOFF, (), ("w1",), retry_delay=1.0)
    try:
        await until(lambda: "t1" in master.tasks._waiting.get("w1", {}))
        master.store.broken = True
        master.connect("w1")
        # The handover is not stored: nothing is sent; it is tried again (after >= 1 s).
        await until(lambda: master.store.refused > 0 and not master.tasks._handing)
        assert master.link.sent == []
        master.store.broken = False
        await until(lambda: master.tasks.get("t1").status is TaskStatus.ASSIGNED)
        assert [t.attempt for t in master.link.sent] == [2]
        assert master.link.retry_at_when_sent == [None]
    finally:
        await master.stop()
