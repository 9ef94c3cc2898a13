"""Persistence of the master's state: a bridge between the in-memory registry/task book
and a Store (SQLite or PostgreSQL).

In-memory components stay the source of truth at run time and never wait on the
database: their changes are queued and written, in order, by one background task
(in a thread, the store being synchronous); heartbeat times go through the
HeartbeatWriteBehind in batches. At start-up the registry and the tasks are loaded,
so pre-registered workers can rejoin after a restart without the admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudai.backoff import Backoff
from cloudai.master.registry import WorkerEntry, WorkerRegistry
from cloudai.master.tasks import TaskBook, TaskState
from cloudai.store import (
    AssignmentRecord,
    DuplicateError,
    HeartbeatWriteBehind,
    NotFoundError,
    ResultRecord,
    Store,
    StoreError,
    TaskRecord,
    WorkerRecord,
)
from cloudai.task_status import RESULT_STATUSES, TaskStatus
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import WorkerTelemetry

log = logging.getLogger(__name__)

Operation = Callable[[], object]

UPSERT_BATCH = 1000
"""Worker upserts queued together are written in one transaction, at most this many."""


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
    )


def task_state(record: TaskRecord, result: ResultRecord | None) -> TaskState:
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
    )
    if result is not None:
        task.logs = result.logs
        task.logs_truncated = result.logs_truncated
        task.exit_code = result.exit_code
        task.result_location = result.result_location
    return task


class MasterPersistence:
    def __init__(self, store: Store, *, heartbeat_flush_interval: float) -> None:
        self.store = store
        self.heartbeats = HeartbeatWriteBehind(store, interval=heartbeat_flush_interval)
        self._queue: asyncio.Queue[Operation | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._known_tasks: set[str] = set()
        self._results_saved: set[str] = set()
        self.failed_writes = 0

    # -- start-up ---------------------------------------------------------------------------

    async def load(self, registry: WorkerRegistry, tasks: TaskBook) -> tuple[int, int]:
        """Restore workers and tasks; returns how many of each."""
        workers = await asyncio.to_thread(self.store.list_workers)
        for worker in workers:
            registry.load(worker_entry(worker))
        records = await asyncio.to_thread(self.store.list_tasks, None, None, None)
        for task in records:
            result = await asyncio.to_thread(self.store.get_result, task.task_id)
            tasks.load(task_state(task, result))
            self._known_tasks.add(task.task_id)
            if result is not None:
                self._results_saved.add(task.task_id)
        return len(workers), len(records)

    def attach(self, registry: WorkerRegistry, tasks: TaskBook) -> None:
        registry.add_listener(self.on_worker_changed)
        tasks.add_listener(self.on_task_changed)
        tasks.add_assignment_listener(self.on_assignment)

    def start(self) -> None:
        self.heartbeats.start()
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name="store-writer"
        )

    async def stop(self) -> None:
        """Write everything queued, flush heartbeat times, close the store."""
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

    def on_task_changed(self, task: TaskState) -> None:
        record = task_record(task)
        if task.task_id not in self._known_tasks:
            self._known_tasks.add(task.task_id)
            self._submit(lambda: self.store.add_task(record))
        else:
            self._submit(
                lambda: self.store.update_task(
                    record.task_id,
                    status=record.status,
                    message=record.message,
                    started_at=record.started_at,
                    finished_at=record.finished_at,
                )
            )
        if task.status in RESULT_STATUSES and task.task_id not in self._results_saved:
            self._results_saved.add(task.task_id)
            result = ResultRecord(
                task_id=task.task_id,
                worker_id=task.target_worker_id,
                status=task.status,
                logs=task.logs,
                logs_truncated=task.logs_truncated,
                exit_code=task.exit_code,
                result_location=task.result_location,
            )
            self._submit(lambda: self.store.save_result(result))

    def on_assignment(self, task_id: str, worker_id: str, acknowledged: bool, message: str) -> None:
        record = AssignmentRecord(task_id, worker_id, acknowledged=acknowledged, message=message)
        self._submit(lambda: self.store.add_assignment(record))

    def on_telemetry(self, state: WorkerTelemetry, event: TelemetryEvent) -> None:
        if event is TelemetryEvent.INACTIVE:
            worker_id = state.worker_id
            self._submit(lambda: self.store.set_worker_active(worker_id, False))
        elif event is not TelemetryEvent.REMOVED:
            self.heartbeats.touch(state.worker_id, datetime.fromtimestamp(state.last_update, UTC))

    # -- the writer -------------------------------------------------------------------------

    def _submit(self, operation: Operation) -> None:
        self._queue.put_nowait(operation)

    async def _write_loop(self) -> None:
        """Writes in order. While the database is unreachable the same write is retried
        with back-off (later writes wait behind it, so nothing is lost or reordered)."""
        backoff = Backoff(initial=0.2, maximum=10.0)
        taken: deque[Operation | None] = deque()  # taken from the queue, not written yet
        while True:
            operation = taken.popleft() if taken else await self._queue.get()
            if operation is None:
                return
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
