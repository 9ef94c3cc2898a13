"""Persistence of the master's state: a bridge between the in-memory registry/task book
and a Store (SQLite or PostgreSQL).

Three ways to the store, by what a crash may cost:

- **Tasks: write-ahead** (``TaskBook``'s journal). A submission, an assignment's outcome,
  a cancellation and a result are committed before anyone is answered; the task book
  awaits ``GroupCommit.commit``, which puts what arrives together into one transaction
  (group commit). "running" from heartbeats goes through the same queue without a
  waiter, so writes of a task stay in order.
- **The worker registry: write-behind, in order.** Registrations, removals and the
  inactive flag are queued and written by one background task; a burst of upserts is
  one transaction. (A registration is re-sent by the worker after a restart.)
- **Heartbeat times: written behind in batches** (``HeartbeatWriteBehind``).

At start-up the registry and the tasks are loaded, so pre-registered workers can rejoin
after a restart without the admin. A task stored as "queued" was stored before its
AssignTask and the master stopped before the outcome was stored: the worker may or may
not have it. It stays "queued" with a message saying so; the worker's heartbeat
("running") or result settles it. Two "queued" tasks no worker can have are not such:
one waiting for its worker to connect (its message says so), and one waiting for its
next attempt (its ``retry_at`` is set; it is cleared, and committed, before that attempt
is handed over). The task book hands those over after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudai.backoff import Backoff
from cloudai.master.registry import WorkerEntry, WorkerRegistry
from cloudai.master.tasks import (
    WAITING,
    FinishedAttempt,
    NotStored,
    TaskBook,
    TaskChange,
    TaskState,
)
from cloudai.store import (
    AssignmentRecord,
    AttemptRecord,
    DuplicateError,
    GroupCommit,
    HeartbeatWriteBehind,
    NotFoundError,
    ResultRecord,
    Store,
    StoreError,
    TaskRecord,
    WorkerRecord,
)
from cloudai.task_status import TaskStatus
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import WorkerTelemetry

log = logging.getLogger(__name__)

Operation = Callable[[], object]
REGISTRY_CONFIRM_TIMEOUT = 10.0
"""How long an admin's register or unregister waits for the store to commit it."""


@dataclass(frozen=True, slots=True)
class Barrier:
    """A mark in the registry's write queue: done once every write before it is."""

    done: asyncio.Future[None]

    def __call__(self) -> None:  # never written: the writer resolves it in order
        return None


UPSERT_BATCH = 1000
"""Worker upserts queued together are written in one transaction, at most this many."""

UNCONFIRMED = (
    "master restarted before the assignment was stored: the worker may or may not have "
    "this task; its heartbeat (running) or its result will tell"
)
"""The message of a task loaded as "queued": stored, its AssignTask outcome not."""


@dataclass(frozen=True, slots=True)
class WorkerUpsert:
    """A queued write of one worker, recognisable so that a burst (workers registering
    at start-up or after a restart) is written in one transaction, not one each."""

    store: Store
    record: WorkerRecord

    def __call__(self) -> None:
        self.store.upsert_worker(self.record)


def to_datetime(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def to_timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def worker_record(entry: WorkerEntry) -> WorkerRecord:
    return WorkerRecord(
        worker_id=entry.worker_id,
        address=entry.address,
        total_cpu=entry.total_cpu,
        total_memory=entry.total_memory,
        total_storage=entry.total_storage,
        total_gpu=entry.total_gpu,
        task_limits=entry.task_limits,
        registered_at=to_datetime(entry.registered_at) or datetime.now(UTC),
        updated_at=to_datetime(entry.updated_at) or datetime.now(UTC),
        cert_fingerprint=entry.cert_fingerprint,
    )


def worker_entry(record: WorkerRecord) -> WorkerEntry:
    return WorkerEntry(
        worker_id=record.worker_id,
        address=record.address,
        total_cpu=record.total_cpu,
        total_memory=record.total_memory,
        total_storage=record.total_storage,
        total_gpu=record.total_gpu,
        task_limits=record.task_limits,
        cert_fingerprint=record.cert_fingerprint,
        registered_at=record.registered_at.timestamp(),
        updated_at=record.updated_at.timestamp(),
    )


def task_record(task: TaskState) -> TaskRecord:
    return TaskRecord(
        task_id=task.task_id,
        target_worker_id=task.target_worker_id,
        docker_image=task.docker_image,
        command=task.command,
        req_cpu=task.req_cpu,
        req_memory=task.req_memory,
        req_storage=task.req_storage,
        req_gpu=task.req_gpu,
        status=task.status,
        message=task.message,
        submitted_at=to_datetime(task.submitted_at) or datetime.now(UTC),
        started_at=to_datetime(task.started_at),
        finished_at=to_datetime(task.finished_at),
        time_limit=task.time_limit,
        max_retries=task.max_retries,
        attempt=task.attempt,
        any_worker=task.any_worker,
        retry_at=stored_retry_at(task),
    )


def stored_retry_at(task: TaskState) -> datetime | None:
    """When the task's next attempt is due, while it waits for it (only a "queued" task
    does)."""
    return to_datetime(task.retry_at) if task.status is TaskStatus.QUEUED else None


def attempt_record(task_id: str, ended: FinishedAttempt) -> AttemptRecord:
    return AttemptRecord(
        task_id=task_id,
        attempt=ended.attempt,
        worker_id=ended.worker_id,
        status=ended.status,
        finished_at=to_datetime(ended.finished_at) or datetime.now(UTC),
        message=ended.message,
        exit_code=ended.exit_code,
        logs=ended.logs,
        logs_truncated=ended.logs_truncated,
        started_at=to_datetime(ended.started_at),
    )


def finished_attempt(record: AttemptRecord) -> FinishedAttempt:
    """An attempt as the task book holds it (without its logs)."""
    return FinishedAttempt(
        attempt=record.attempt,
        worker_id=record.worker_id,
        status=TaskStatus.parse(record.status),
        finished_at=record.finished_at.timestamp(),
        message=record.message,
        exit_code=record.exit_code,
        started_at=to_timestamp(record.started_at),
    )


def task_state(
    record: TaskRecord,
    result: ResultRecord | None,
    attempts: Sequence[AttemptRecord] = (),
) -> TaskState:
    task = TaskState(
        task_id=record.task_id,
        target_worker_id=record.target_worker_id,
        docker_image=record.docker_image,
        command=record.command,
        req_cpu=record.req_cpu,
        req_memory=record.req_memory,
        req_storage=record.req_storage,
        req_gpu=record.req_gpu,
        status=TaskStatus.parse(record.status),
        message=record.message,
        submitted_at=record.submitted_at.timestamp(),
        started_at=to_timestamp(record.started_at),
        finished_at=to_timestamp(record.finished_at),
        time_limit=record.time_limit,
        max_retries=record.max_retries,
        attempt=record.attempt,
        any_worker=record.any_worker,
        retry_at=to_timestamp(record.retry_at) if record.status == TaskStatus.QUEUED else None,
        attempts=tuple(finished_attempt(attempt) for attempt in attempts),
    )
    if result is not None:
        task.logs = result.logs
        task.logs_truncated = result.logs_truncated
        task.exit_code = result.exit_code
        task.result_location = result.result_location
    return task


def task_operation(change: TaskChange) -> Callable[[Store], None]:
    """The store operation of one task change: one transaction with whatever else the
    group commit puts beside it."""
    task = change.task
    record = task_record(task)
    assignment = (
        None
        if change.assignment is None
        else AssignmentRecord(
            task.task_id,
            change.assignment.worker_id,
            acknowledged=change.assignment.acknowledged,
            message=change.assignment.message,
        )
    )
    result = (
        ResultRecord(
            task_id=task.task_id,
            worker_id=task.target_worker_id,
            # what the worker reported: a time-out is a failure with reason "timed out"
            status=TaskStatus.FAILURE if task.status is TaskStatus.TIMED_OUT else task.status,
            logs=task.logs,
            logs_truncated=task.logs_truncated,
            exit_code=task.exit_code,
            result_location=task.result_location,
            reason=change.result_reason,
            attempt=task.attempt,
        )
        if change.result
        else None
    )
    ended = (
        None
        if change.finished_attempt is None
        else attempt_record(task.task_id, change.finished_attempt)
    )

    def write(store: Store) -> None:
        if change.new:
            store.add_task(record)
        elif not store.update_task(
            record.task_id,
            status=record.status,
            message=record.message,
            started_at=record.started_at,
            finished_at=record.finished_at,
            attempt=record.attempt,
            new_attempt=ended is not None,
            target_worker_id=record.target_worker_id,
            retry_at=record.retry_at,
        ):
            raise NotFoundError(f"no task {record.task_id!r} to update")
        if ended is not None:
            store.add_attempt(ended)  # idempotent: a replayed change stores it once
        if assignment is not None:
            store.add_assignment(assignment)
        if result is not None:
            store.save_result(result)  # idempotent: the first delivery is kept

    return write


def describe(change: TaskChange) -> str:
    what = (
        "result"
        if change.result
        else "attempt"
        if change.finished_attempt
        else "assignment"
        if change.assignment
        else "state"
    )
    return f"task {change.task.task_id} ({'new' if change.new else what})"


class StoreJournal:
    """The task book's journal on the store: write-ahead through a GroupCommit."""

    def __init__(self, commits: GroupCommit) -> None:
        self._commits = commits

    async def commit(self, change: TaskChange) -> None:
        try:
            await self._commits.commit(task_operation(change), describe(change))
        except (StoreError, ValueError) as exc:
            raise NotStored(str(exc)) from exc

    def write_later(self, change: TaskChange) -> None:
        self._commits.write_later(task_operation(change), describe(change))


class MasterPersistence:
    def __init__(
        self,
        store: Store,
        *,
        heartbeat_flush_interval: float,
        group_commit: bool = True,
        commit_window: float = 0.0,
    ) -> None:
        """``group_commit``: task writes that arrive together share one transaction
        (False: one each); ``commit_window``: seconds the committer waits after the first
        of a batch for more (0: it takes what queued while the last commit ran)."""
        self.store = store
        self.heartbeats = HeartbeatWriteBehind(store, interval=heartbeat_flush_interval)
        self.commits = GroupCommit(store, window=commit_window, grouped=group_commit)
        self.journal = StoreJournal(self.commits)
        self._queue: asyncio.Queue[Operation | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.failed_writes = 0

    @property
    def queued_writes(self) -> int:
        """Registry writes queued behind (registrations, removals, inactive flags)."""
        return self._queue.qsize()

    # -- start-up ---------------------------------------------------------------------------

    async def load(self, registry: WorkerRegistry, tasks: TaskBook) -> tuple[int, int]:
        """Restore workers and tasks; returns how many of each. Tasks stored as "queued"
        (their AssignTask outcome never stored) get the UNCONFIRMED message, but not
        those waiting for their worker or for their next attempt: no worker has them,
        and the task book hands them over once it starts."""
        workers = await asyncio.to_thread(self.store.list_workers)
        for worker in workers:
            registry.load(worker_entry(worker))
        records = await asyncio.to_thread(self.store.list_tasks, None, None, None)
        unconfirmed = [
            r.task_id
            for r in records
            if r.status == TaskStatus.QUEUED
            and r.message != UNCONFIRMED
            and not r.message.startswith(WAITING)  # never sent: its worker was away
            and r.retry_at is None  # never sent: it waits for its next attempt
        ]
        if unconfirmed:
            await asyncio.to_thread(self._mark_unconfirmed, unconfirmed)
            log.warning(
                "%d task(s) were stored but the master stopped before their assignment was: "
                "kept as queued until their worker reports them (%s)",
                len(unconfirmed),
                ", ".join(unconfirmed[:10]) + (" ..." if len(unconfirmed) > 10 else ""),
            )
        attempts: dict[str, list[AttemptRecord]] = {}
        for attempt in await asyncio.to_thread(self.store.list_attempts):
            attempts.setdefault(attempt.task_id, []).append(attempt)
        for task in records:
            if task.task_id in unconfirmed:
                task.message = UNCONFIRMED
            result = await asyncio.to_thread(self.store.get_result, task.task_id)
            tasks.load(task_state(task, result, attempts.get(task.task_id, ())))
        return len(workers), len(records)

    def _mark_unconfirmed(self, task_ids: list[str]) -> None:
        with self.store.transaction():
            for task_id in task_ids:
                self.store.update_task(task_id, message=UNCONFIRMED)

    def attach(self, registry: WorkerRegistry, tasks: TaskBook) -> None:
        registry.add_listener(self.on_worker_changed)
        tasks.set_journal(self.journal)

    def start(self) -> None:
        self.heartbeats.start()
        self.commits.start()
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name="store-writer"
        )

    async def stop(self) -> None:
        """Write everything queued, flush heartbeat times, close the store."""
        await self.commits.stop()
        stats = self.commits.stats
        if stats.operations:
            log.info(
                "store: %d task writes committed in %d transactions (largest %d; %d failed)",
                stats.operations,
                stats.transactions,
                stats.largest_batch,
                stats.failed_operations,
            )
        if self._writer is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self.heartbeats.stop(timeout=5.0)
        await asyncio.to_thread(self.store.close)

    # -- listeners (called in the event loop; never block) ----------------------------------

    def on_worker_changed(self, worker_id: str, entry: WorkerEntry | None) -> None:
        if entry is None:
            self._submit(lambda: self.store.delete_worker(worker_id))
        else:
            self._submit(WorkerUpsert(self.store, worker_record(entry)))

    def on_telemetry(self, state: WorkerTelemetry, event: TelemetryEvent) -> None:
        if event is TelemetryEvent.INACTIVE:
            worker_id = state.worker_id
            self._submit(lambda: self.store.set_worker_active(worker_id, False))
        elif event is not TelemetryEvent.REMOVED:
            self.heartbeats.touch(state.worker_id, datetime.fromtimestamp(state.last_update, UTC))

    # -- the registry's writer --------------------------------------------------------------
    def _submit(self, operation: Operation) -> None:
        self._queue.put_nowait(operation)

    async def registry_committed(self, timeout: float = REGISTRY_CONFIRM_TIMEOUT) -> None:
        """Return once every registry change made so far is committed; ``NotStored`` if
        the store has not taken them within ``timeout`` (they stay queued and are written
        when it can)."""
        if self._writer is None or self._writer.done():
            raise NotStored("the store's writer is not running")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(Barrier(done))
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            raise NotStored(
                f"the store did not commit it within {timeout:g} s "
                f"({self.failed_writes} failed write(s) so far); it is written when it can be"
            ) from None

    async def _write_loop(self) -> None:
        """Writes in order. While the database is unreachable the same write is retried
        with back-off (later writes wait behind it, so nothing is lost or reordered)."""
        backoff = Backoff(initial=0.2, maximum=10.0)
        taken: deque[Operation | None] = deque()  # taken from the queue, not written yet
        while True:
            operation = taken.popleft() if taken else await self._queue.get()
            if operation is None:
                return
            if isinstance(operation, Barrier):
                if not operation.done.done():
                    operation.done.set_result(None)
                continue
            if isinstance(operation, WorkerUpsert):
                operation = self._upsert_batch(operation, taken)
            while True:
                try:
                    await asyncio.to_thread(operation)
                except (DuplicateError, NotFoundError) as exc:
                    self.failed_writes += 1
                    log.error("store write refused: %s", exc)
                except StoreError as exc:
                    self.failed_writes += 1
                    delay = backoff.next_delay()
                    log.error("store write failed (%s); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                except Exception:
                    self.failed_writes += 1
                    log.exception("store write failed")
                backoff.reset()
                break

    def _upsert_batch(self, first: WorkerUpsert, taken: deque[Operation | None]) -> Operation:
        """``first`` and the worker upserts queued right behind it, as one write. The
        first other operation taken on the way goes to ``taken``: it is written next."""
        records = [first.record]
        while len(records) < UPSERT_BATCH and not self._queue.empty():
            queued = self._queue.get_nowait()
            if not isinstance(queued, WorkerUpsert):
                taken.append(queued)
                break
            records.append(queued.record)
        if len(records) == 1:
            return first
        return lambda: self.store.upsert_workers(records)

    async def drain(self) -> None:
        """Wait until everything queued so far is written (for tests and admin calls)."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        self._submit(lambda: loop.call_soon_threadsafe(done.set))
        await done.wait()
        await self.commits.barrier()
