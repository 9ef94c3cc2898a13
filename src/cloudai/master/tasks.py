"""TaskBook: tasks the master assigned to workers, their status and their results.

submit -> AssignTask on the target worker -> "assigned" (or "rejected" with the
worker's message); seen in a heartbeat's running_tasks -> "running";
ReportTaskCompletion -> "success" / "failure" / "cancelled" / "timed_out" with logs and
exit code. A task with retries left that fails, times out or is lost runs again: the
finished attempt is stored as an attempt record, the task goes back to "queued" as its
next attempt and is handed to its worker again after a back-off (1 s, 2 s, 4 s... at
most 30 s). When that attempt is due is stored with it (``retry_at``), and cleared (and
committed) before the attempt is handed over: a master restarted meanwhile knows no
worker has it, and hands it over when its back-off ends.

Write-ahead: what the master answers with success is committed first. Each change is
handed to the ``TaskJournal`` (the store, through MasterPersistence) and awaited; the
book changes its in-memory state only once the journal has committed the change, so a
reader never sees, and a caller is never told, what a crash could take back:

- ``submit`` stores the task ("queued") before AssignTask is sent (a crash between the
  two cannot lose a task the worker may run), then stores the assignment's outcome
  before it returns;
- ``cancel`` stores the cancellation request before it returns;
- ``record_result`` stores the result before it says "recorded"; a result the store
  could not take raises ``TaskError("unavailable")`` (the worker keeps it and retries).

The changes of one task are serialised (one at a time, each built from the state the
previous one committed), so writes of one task never overtake each other. "running",
seen in heartbeats, is written behind (nobody is answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Protocol

from cloudai.api.models import TaskSubmission
from cloudai.master.registry import WorkerRegistry
from cloudai.master.worker_link import WorkerLink, WorkerUnavailable
from cloudai.proto import pb
from cloudai.task_lifecycle import LostTaskWatch, TaskEvent, can, next_status, retryable
from cloudai.task_status import RESULT_STATUSES, TERMINAL_STATUSES, TaskStatus
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import WorkerTelemetry
from cloudai.validation import InvalidMessage, check_id

log = logging.getLogger(__name__)


WAITING = "waiting for worker"
"""The message of a task stored "queued" while its worker is not connected."""
UNCONFIRMED_PREFIX = "master restarted before the assignment was stored"
"""The start of the message of a task whose AssignTask outcome was never stored."""
TIMED_OUT_REASON = "timed out"
"""TaskResult.reason of a task its worker stopped at its time limit."""
MAX_RETRY_DELAY = 30.0
REPORTED_STATUSES = RESULT_STATUSES | {TaskStatus.TIMED_OUT}
"""Statuses only a worker's result sets: once one is recorded, the task is settled."""


class TaskError(Exception):
    """A refused task operation. ``kind``: invalid, not_found, conflict or unavailable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_submission(request: TaskSubmission) -> None:
    """What the model's types cannot say: id characters, and something to run."""
    if request.worker_id is None:
        raise TaskError("invalid", "a task needs a worker_id (or any_worker: true)")
    try:
        check_id("worker_id", request.worker_id)
        if request.task_id:
            check_id("task_id", request.task_id)
    except InvalidMessage as exc:
        raise TaskError("invalid", str(exc)) from None
    if not request.docker_image and not request.command:
        raise TaskError("invalid", "a task needs a docker_image or a command")
    for name in ("req_cpu", "req_memory", "req_storage", "req_gpu"):
        value = getattr(request, name)
        if not math.isfinite(value) or value < 0:
            raise TaskError("invalid", f"{name} must be a finite number >= 0")
    if not math.isfinite(request.time_limit) or request.time_limit < 0:
        raise TaskError("invalid", "time_limit must be a finite number of seconds >= 0")
    if request.retries < 0:
        raise TaskError("invalid", "retries must be >= 0")


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    """One finished run of a task that runs again (or could have)."""

    attempt: int
    worker_id: str
    status: TaskStatus
    finished_at: float
    message: str = ""
    exit_code: int | None = None
    started_at: float | None = None
    logs: str = ""  # kept in the store only; the task book holds attempts without logs
    logs_truncated: bool = False

    def without_logs(self) -> FinishedAttempt:
        return replace(self, logs="", logs_truncated=False)


_RESULT_EVENT = {
    TaskStatus.SUCCESS: TaskEvent.SUCCEEDED,
    TaskStatus.FAILURE: TaskEvent.FAILED,
    TaskStatus.CANCELLED: TaskEvent.CANCELLED,
}
_RESULT_STATUS = {
    TaskEvent.SUCCEEDED: TaskStatus.SUCCESS,
    TaskEvent.FAILED: TaskStatus.FAILURE,
    TaskEvent.CANCELLED: TaskStatus.CANCELLED,
    TaskEvent.TIMED_OUT: TaskStatus.TIMED_OUT,
}


def result_event(result: pb.TaskResult) -> TaskEvent:
    """What a worker's TaskResult says happened: an unknown status is a failure, and a
    failure its worker says timed out is a time-out."""
    status = TaskStatus(result.status) if result.status in RESULT_STATUSES else TaskStatus.FAILURE
    event = _RESULT_EVENT[status]
    if event is TaskEvent.FAILED and result.reason == TIMED_OUT_REASON:
        return TaskEvent.TIMED_OUT
    return event


def result_message(result: pb.TaskResult) -> str:
    """The task's message once ``result`` is recorded."""
    if result.reason:
        return f"{result.reason} (reported by {result.worker_id})"
    return f"reported by {result.worker_id}"


@dataclass(slots=True)
class TaskState:
    task_id: str
    target_worker_id: str
    docker_image: str = ""
    command: str = ""
    req_cpu: float = 0.0
    req_memory: float = 0.0
    req_storage: float = 0.0
    req_gpu: float = 0.0
    status: TaskStatus = TaskStatus.QUEUED
    message: str = ""
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    logs: str = ""
    logs_truncated: bool = False
    result_location: str = ""
    time_limit: float = 0.0  # seconds; 0: no limit
    max_retries: int = 0
    attempt: int = 1  # the current run; 1 for the first
    attempts: tuple[FinishedAttempt, ...] = ()  # earlier runs, without their logs
    any_worker: bool = False  # placed by the master: each retry is placed again
    retry_at: float | None = None  # queued for its next attempt, due then; None once handed

    def copy(self) -> TaskState:
        return replace(self)

    @property
    def retries_left(self) -> int:
        return max(0, self.max_retries + 1 - self.attempt)

    def to_proto(self) -> pb.Task:
        return pb.Task(
            task_id=self.task_id,
            docker_image=self.docker_image,
            command=self.command,
            req_cpu=self.req_cpu,
            req_memory=self.req_memory,
            req_storage=self.req_storage,
            req_gpu=self.req_gpu,
            target_worker_id=self.target_worker_id,
            time_limit_seconds=self.time_limit,
            attempt=self.attempt,
        )


@dataclass(frozen=True, slots=True)
class Assignment:
    """One AssignTask attempt and the worker's answer."""

    worker_id: str
    acknowledged: bool
    message: str


@dataclass(frozen=True, slots=True)
class TaskChange:
    """A change of one task for the journal: ``task`` is the whole new state (a copy).

    ``new``: the task is inserted (else updated); ``assignment``: an AssignTask attempt
    to record with it; ``result``: the task's result (logs, exit code) is recorded too;
    ``finished_attempt``: the task runs again, and this is the run that ended.
    """

    task: TaskState
    new: bool = False
    assignment: Assignment | None = None
    result: bool = False
    result_reason: str = ""
    finished_attempt: FinishedAttempt | None = None


class NotStored(Exception):
    """The journal could not commit a change: nothing of it is stored."""


class TaskJournal(Protocol):
    """Where the task book writes its changes (MasterPersistence: the store)."""

    async def commit(self, change: TaskChange) -> None:
        """Return once ``change`` is committed; ``NotStored`` if it could not be."""
        ...

    def write_later(self, change: TaskChange) -> None:
        """Queue ``change`` to be written behind, in order with the committed ones."""
        ...


class UnrecordedJournal:
    """A task book without a store (tests, tools): every change is accepted as is."""

    async def commit(self, change: TaskChange) -> None:
        return None

    def write_later(self, change: TaskChange) -> None:
        return None


TaskListener = Callable[[TaskState], None]
Placer = Callable[[TaskState, frozenset[str]], str | None]
"""Where an "any worker" task's next attempt should run: ``placer(task, tried)`` is the
worker placement chooses now, preferring one not in ``tried`` (the workers its earlier
attempts ran on); None when no active worker fits."""
# (task_id, worker_id, acknowledged, message): one per AssignTask attempt
AssignmentListener = Callable[[str, str, bool, str], None]


class TaskBook:
    def __init__(
        self,
        registry: WorkerRegistry,
        link: WorkerLink,
        clock: Callable[[], float] = time.time,
        journal: TaskJournal | None = None,
        *,
        start_deadline: float = 30.0,
        vanish_grace: float = 15.0,
        offline_wait: float = 600.0,
        retry_delay: float = 1.0,
    ) -> None:
        """``start_deadline``: an accepted task its worker never lists as running by then is
        lost; ``vanish_grace``: a running task missing from its worker's heartbeats this
        long without a result is lost; ``offline_wait``: a task for a worker that is not
        connected waits this long for it, then is lost."""
        self._registry = registry
        self._link = link
        self._clock = clock
        self._watch = LostTaskWatch(start_deadline, vanish_grace)
        self._offline_wait = offline_wait
        self._retry_delay = retry_delay  # before the 1st retry; doubles, at most 30 s
        self._waiting: dict[str, dict[str, float]] = {}  # worker id -> task id -> deadline
        # "Any worker" next attempts among them: placed again when any worker registers.
        self._waiting_placement: set[str] = set()
        self._checker: asyncio.Task[None] | None = None
        self._dispatching: set[asyncio.Task[None]] = set()
        self._journal: TaskJournal = journal or UnrecordedJournal()
        self._tasks: dict[str, TaskState] = {}
        self._reserved: set[str] = set()  # ids being stored by submit, not in _tasks yet
        self._handing: set[str] = set()  # ids with an AssignTask in flight
        self._busy: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # per task: lock, users
        self._listeners: list[TaskListener] = []
        self._assignment_listeners: list[AssignmentListener] = []
        self._placer: Placer | None = None
        self._resumed: list[str] = []  # loaded waiting for their next attempt; see start()

    def set_placer(self, placer: Placer) -> None:
        """Place each retry of an "any worker" task with ``placer`` (ClusterAdmin's)."""
        self._placer = placer

    def set_journal(self, journal: TaskJournal) -> None:
        """Write changes to ``journal`` from now on (MasterPersistence.attach)."""
        self._journal = journal

    def add_listener(self, listener: TaskListener) -> None:
        """``listener(task_copy)`` after every change, once it is committed."""
        self._listeners.append(listener)

    def add_assignment_listener(self, listener: AssignmentListener) -> None:
        """``listener(task_id, worker_id, acknowledged, message)`` after each AssignTask."""
        self._assignment_listeners.append(listener)

    def load(self, task: TaskState) -> None:
        """A task from the store, at start: one in flight is watched again (its worker must
        list it or report it), one waiting for its worker waits again, one waiting for
        its next attempt is handed over when that is due (once ``start`` is called)."""
        self._tasks[task.task_id] = task.copy()
        now = self._clock()
        if task.status is TaskStatus.QUEUED and task.retry_at is not None:
            self._resumed.append(task.task_id)
        elif task.status in (TaskStatus.ASSIGNED, TaskStatus.RUNNING) or (
            task.status is TaskStatus.QUEUED and not task.message.startswith(WAITING)
        ):
            self._watch.assigned(task.task_id, task.target_worker_id, now)
        elif task.status is TaskStatus.QUEUED:
            self._wait_for(task.target_worker_id, task.task_id, now + self._offline_wait)

    def _changed(self, task: TaskState) -> None:
        for listener in self._listeners:
            listener(task.copy())

    @asynccontextmanager
    async def _exclusive(self, task_id: str) -> AsyncIterator[None]:
        """One change of ``task_id`` at a time: built from the committed state, written,
        applied, before the next one is built."""
        entry = self._busy.get(task_id)
        if entry is None:
            entry = self._busy[task_id] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._busy[task_id]

    async def _commit(self, change: TaskChange) -> None:
        """Commit ``change``, then make it the task's state in memory."""
        await self._journal.commit(change)
        self._apply(change.task)

    def _apply(self, task: TaskState) -> None:
        self._tasks[task.task_id] = task
        self._changed(task)

    # -- operations -------------------------------------------------------------------------

    async def submit(self, request: TaskSubmission, *, placed: bool = False) -> TaskState:
        """Store the task, then hand it to its worker. ``placed``: the master chose
        ``request.worker_id`` (the admin asked for any worker), so a retry is placed
        again."""
        check_submission(request)
        worker_id = request.worker_id
        assert worker_id is not None  # check_submission says so
        if worker_id not in self._registry:
            raise TaskError("not_found", f"unknown worker {worker_id!r}")
        connected = self._registry.has_session(worker_id)
        task_id = request.task_id or f"task-{uuid.uuid4().hex[:12]}"
        if task_id in self._tasks or task_id in self._reserved:
            raise TaskError("conflict", f"task id {task_id!r} already exists")
        task = TaskState(
            task_id=task_id,
            target_worker_id=worker_id,
            docker_image=request.docker_image,
            command=request.command,
            req_cpu=request.req_cpu,
            req_memory=request.req_memory,
            req_storage=request.req_storage,
            req_gpu=request.req_gpu,
            submitted_at=self._clock(),
            time_limit=request.time_limit,
            max_retries=request.retries,
            any_worker=placed,
        )
        deadline = task.submitted_at + self._offline_wait
        if not connected:
            task.message = (
                f"{WAITING} {worker_id!r} to connect (until "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(deadline))} UTC)"
            )
        # Stored before the worker hears of it: no crash can lose a task it may run.
        self._reserved.add(task_id)
        try:
            await self._commit(TaskChange(task, new=True))
        except NotStored as exc:
            raise TaskError(
                "unavailable",
                f"task {task_id!r} not accepted: the store could not record it ({exc})",
            ) from None
        finally:
            self._reserved.discard(task_id)
        if not connected:
            self._wait_for(worker_id, task_id, deadline)
            return task.copy()
        return await self._dispatch(task)

    async def _dispatch(self, task: TaskState) -> TaskState:
        """AssignTask to the task's worker; its outcome stored; the task as stored. A next
        attempt is first marked handed over (``retry_at`` cleared), and that committed."""
        task_id = task.task_id
        self._handing.add(task_id)
        try:
            if task.retry_at is not None:
                task = await self._hand_over(task)
            worker_id = task.target_worker_id
            try:
                ack = await self._link.assign_task(worker_id, task.to_proto())
            except WorkerUnavailable as exc:
                await self._assigned(task_id, Assignment(worker_id, False, str(exc)))
                raise TaskError("unavailable", str(exc)) from None
            return await self._assigned(task_id, Assignment(worker_id, ack.success, ack.message))
        finally:
            self._handing.discard(task_id)

    async def _hand_over(self, task: TaskState) -> TaskState:
        """Store that the next attempt of ``task`` is being handed to its worker, so that a
        master restarted from now on waits for the worker's word instead of handing it
        over again. ``TaskError`` when it is not to be sent: the task changed meanwhile
        (cancelled, or handed over already), or the store could not record it (then
        it is tried again after a back-off)."""
        task_id, attempt = task.task_id, task.attempt
        async with self._exclusive(task_id):
            current = self._next_attempt(task_id, attempt)
            if current is None:
                raise TaskError("conflict", f"task {task_id!r} changed meanwhile")
            handed = current.copy()
            handed.retry_at = None
            try:
                await self._commit(TaskChange(handed))
            except NotStored as exc:
                delay = max(1.0, self._backoff(attempt))
                self._retry_later(task_id, attempt, delay)
                raise TaskError(
                    "unavailable",
                    f"the store could not record it ({exc}); trying again in {delay:g} s",
                ) from None
        return handed.copy()

    async def _assigned(self, task_id: str, attempt: Assignment) -> TaskState:
        """Store AssignTask's outcome with the task's new status; the task as stored."""
        async with self._exclusive(task_id):
            task = self._tasks[task_id].copy()
            if attempt.acknowledged:
                if task.status is TaskStatus.QUEUED:  # a fast task may have reported back
                    task.status = TaskStatus.ASSIGNED
                    task.message = attempt.message
            elif not task.status.finished:
                task.status = TaskStatus.REJECTED
                task.message = attempt.message or "refused by the worker"
                task.finished_at = self._clock()
            change = TaskChange(task, assignment=attempt)
            try:
                await self._commit(change)
            except NotStored as exc:
                # The worker's answer is a fact: keep it in memory, and try to store it
                # behind; but the caller is not told "assigned" when it is not stored.
                self._journal.write_later(change)
                self._apply(task)
                raise TaskError(
                    "unavailable",
                    f"task {task_id!r} was handed to worker {attempt.worker_id!r} "
                    f"(acknowledged: {attempt.acknowledged}) but the store could not record "
                    f"the outcome ({exc})",
                ) from None
        if attempt.acknowledged and not task.status.finished:
            self._watch.assigned(task_id, attempt.worker_id, self._clock())
        for listener in self._assignment_listeners:
            listener(task_id, attempt.worker_id, attempt.acknowledged, attempt.message)
        return task.copy()

    async def cancel(self, task_id: str) -> TaskState:
        task = self._require(task_id)
        if task.status in TERMINAL_STATUSES:
            raise TaskError("conflict", f"task {task_id} already finished ({task.status})")
        if (
            task.status is TaskStatus.QUEUED
            and task_id not in self._watch
            and task_id not in self._handing
        ):
            return await self._cancel_unsent(task_id)
        try:
            ack = await self._link.cancel_task(task.target_worker_id, task_id)
        except WorkerUnavailable as exc:
            raise TaskError("unavailable", str(exc)) from None
        if not ack.success:
            raise TaskError("conflict", ack.message or "the worker refused to cancel")
        async with self._exclusive(task_id):
            task = self._tasks[task_id].copy()
            if not task.status.finished:  # it may have finished meanwhile
                task.message = ack.message or "cancellation requested"
            try:
                await self._commit(TaskChange(task))
            except NotStored as exc:
                raise TaskError(
                    "unavailable",
                    f"worker {task.target_worker_id!r} is cancelling task {task_id!r} but the "
                    f"store could not record the request ({exc})",
                ) from None
        return task.copy()

    async def _cancel_unsent(self, task_id: str) -> TaskState:
        """Cancel a task no worker has: one waiting for its worker, or for its next attempt."""
        async with self._exclusive(task_id):
            task = self._tasks[task_id].copy()
            if task.status is not TaskStatus.QUEUED:
                raise TaskError("conflict", f"task {task_id} changed meanwhile ({task.status})")
            task.status = TaskStatus.CANCELLED
            task.retry_at = None
            task.message = f"cancelled before attempt {task.attempt} was handed to its worker"
            task.finished_at = self._clock()
            try:
                await self._commit(TaskChange(task))
            except NotStored as exc:
                raise TaskError(
                    "unavailable", f"task {task_id!r} not cancelled: the store failed ({exc})"
                ) from None
        self._waiting.get(task.target_worker_id, {}).pop(task_id, None)
        return task.copy()

    async def record_result(self, result: pb.TaskResult) -> tuple[bool, str]:
        """A worker's ReportTaskCompletion, bound to what this master issued: a result
        for a task it never assigned to that worker is refused, and a task is finished
        once. A repeated delivery of the recorded result is acknowledged (idempotent).

        (True, ...) means the result is committed. ``TaskError("unavailable")`` when the
        store could not take it: the worker must keep it and deliver it again."""
        task = self._tasks.get(result.task_id)
        if task is None:
            return False, f"task {result.task_id!r} was never assigned by this master"
        if task.target_worker_id != result.worker_id:
            return False, (
                f"task {result.task_id!r} was assigned to worker {task.target_worker_id!r}, "
                f"not {result.worker_id!r}"
            )
        async with self._exclusive(result.task_id):
            task = self._tasks[result.task_id].copy()
            if 0 < result.attempt < task.attempt:
                # A run that ended before this one started (its result came late):
                # what it did is in the attempt records already, or it was lost.
                return True, (
                    f"result of attempt {result.attempt} ignored: task {task.task_id!r} "
                    f"is on attempt {task.attempt}"
                )
            if task.status in REPORTED_STATUSES and task.finished_at is not None:
                return True, "result already recorded"
            event = result_event(result)
            now = self._clock()
            if retryable(event) and task.retries_left:
                ended = FinishedAttempt(
                    attempt=task.attempt,
                    worker_id=result.worker_id,
                    status=TaskStatus.TIMED_OUT
                    if event is TaskEvent.TIMED_OUT
                    else TaskStatus.FAILURE,
                    finished_at=now,
                    message=result_message(result),
                    exit_code=result.exit_code,
                    started_at=task.started_at,
                    logs=result.logs,
                    logs_truncated=result.logs_truncated,
                )
                change = self._retry_change(task, ended)
            else:
                task.logs = result.logs
                task.logs_truncated = result.logs_truncated
                task.exit_code = result.exit_code
                task.result_location = result.result_location
                task.status = (
                    next_status(task.status, event)
                    if can(task.status, event)
                    else (_RESULT_STATUS[event])
                )
                task.message = result_message(result)
                task.finished_at = now
                task.retry_at = None
                change = TaskChange(task, result=True, result_reason=result.reason)
            try:
                await self._commit(change)
            except NotStored as exc:
                raise TaskError(
                    "unavailable",
                    f"the result of task {task.task_id!r} could not be stored ({exc}); "
                    "deliver it again",
                ) from None
        self._watch.finished(task.task_id)
        if change.finished_attempt is not None:
            log.info(
                "task %s attempt %d on %s: %s; runs again (attempt %d of %d)",
                task.task_id,
                change.finished_attempt.attempt,
                result.worker_id,
                change.finished_attempt.status,
                change.task.attempt,
                change.task.max_retries + 1,
            )
            self._schedule_retry(change.task)
            return True, "result recorded; the task runs again"
        log.info("task %s finished on %s: %s", task.task_id, result.worker_id, task.status)
        return True, "result recorded"

    def _retry_change(self, task: TaskState, ended: FinishedAttempt) -> TaskChange:
        """``task`` (a copy) made its next attempt, queued again; the change to commit."""
        task.status = next_status(task.status, TaskEvent.RETRIED)
        task.attempts = (*task.attempts, ended.without_logs())
        task.attempt += 1
        task.started_at = task.finished_at = None
        task.exit_code = None
        task.logs, task.logs_truncated, task.result_location = "", False, ""
        task.retry_at = ended.finished_at + self._backoff(task.attempt)
        task.message = (
            f"attempt {ended.attempt} {ended.status}"
            f"{': ' + ended.message if ended.message else ''}; running it again "
            f"(attempt {task.attempt} of {task.max_retries + 1})"
        )
        return TaskChange(task, finished_attempt=ended)

    def _backoff(self, attempt: int) -> float:
        """Seconds between the end of an attempt and the start of ``attempt``."""
        return min(MAX_RETRY_DELAY, self._retry_delay * 2 ** (attempt - 2))

    def _schedule_retry(self, task: TaskState) -> None:
        """Hand the next attempt of ``task`` to its worker once its ``retry_at`` is reached
        (at once if it is past; if its worker is not connected then, when it registers)."""
        due = task.retry_at if task.retry_at is not None else self._clock()
        self._retry_later(task.task_id, task.attempt, max(0.0, due - self._clock()))

    def _retry_later(self, task_id: str, attempt: int, delay: float) -> None:
        runner = asyncio.get_running_loop().create_task(
            self._retry_after(task_id, attempt, delay), name=f"retry-{task_id}"
        )
        self._dispatching.add(runner)
        runner.add_done_callback(self._dispatching.discard)

    async def _retry_after(self, task_id: str, attempt: int, delay: float) -> None:
        await asyncio.sleep(delay)
        task = self._next_attempt(task_id, attempt)
        if task is None:
            return  # cancelled, changed or handed over meanwhile
        if task.any_worker:
            task = await self._place_again(task_id, attempt)
            if task is None:
                return
        if not self._registry.has_session(task.target_worker_id):
            if task_id not in self._waiting.get(task.target_worker_id, {}):
                deadline = self._clock() + self._offline_wait
                self._wait_for(task.target_worker_id, task_id, deadline)
            return
        for waiting in self._waiting.values():  # placed on a connected worker: no more waiting
            waiting.pop(task_id, None)
        try:
            await self._dispatch(task.copy())
        except TaskError as exc:
            log.info("attempt %d of task %s not handed to its worker: %s", attempt, task_id, exc)

    def _next_attempt(self, task_id: str, attempt: int) -> TaskState | None:
        """The task, while ``attempt`` is its next attempt, waiting to be handed over."""
        task = self._tasks.get(task_id)
        if (
            task is None
            or task.status is not TaskStatus.QUEUED
            or task.attempt != attempt
            or task.retry_at is None
        ):
            return None
        return task

    async def _place_again(self, task_id: str, attempt: int) -> TaskState | None:
        """An "any worker" task's next attempt goes where placement says now, on a worker
        its earlier attempts did not run on when one fits (stored before it is handed
        over); it stays with its worker when nothing else fits or the move cannot be
        stored. None: the task changed meanwhile."""
        async with self._exclusive(task_id):
            task = self._next_attempt(task_id, attempt)
            if task is None:
                return None
            tried = frozenset(ended.worker_id for ended in task.attempts)
            chosen = self._placer(task, tried) if self._placer is not None else None
            if chosen is None or chosen == task.target_worker_id:
                return task
            moved = task.copy()
            moved.target_worker_id = chosen
            moved.message = f"{task.message}; placed on worker {chosen!r}"
            try:
                await self._commit(TaskChange(moved))
            except NotStored as exc:
                log.warning("task %s stays on %s: %s", task_id, task.target_worker_id, exc)
                return task
        log.info(
            "attempt %d of task %s placed on %s (was %s)",
            attempt,
            task_id,
            chosen,
            task.target_worker_id,
        )
        return moved

    def on_telemetry(self, state: WorkerTelemetry, event: TelemetryEvent) -> None:
        """Heartbeats list running tasks: mark ours "running" (written behind), only for
        the worker the task was assigned to (another worker's heartbeat changes nothing).
        A task with a change in flight is left for the next heartbeat."""
        if event is TelemetryEvent.INACTIVE or event is TelemetryEvent.REMOVED:
            return
        worker_id = state.worker_id
        listed: set[str] = set()
        for running in state.running_tasks:
            task = self._tasks.get(running.task_id)
            if task is None or task.target_worker_id != worker_id:
                continue
            listed.add(running.task_id)
            if (
                task.status in (TaskStatus.QUEUED, TaskStatus.ASSIGNED)
                and running.task_id not in self._busy
                # a next attempt not handed over yet: no worker runs it (an earlier one, ended)
                and task.retry_at is None
            ):
                task = task.copy()
                task.status = TaskStatus.RUNNING
                task.started_at = state.last_update
                self._journal.write_later(TaskChange(task))
                self._apply(task)
        self._watch.heartbeat(worker_id, listed, self._clock())

    # -- reads ------------------------------------------------------------------------------

    def _require(self, task_id: str) -> TaskState:
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskError("not_found", f"unknown task {task_id!r}")
        return task

    def get(self, task_id: str) -> TaskState:
        return self._require(task_id).copy()

    def list(
        self,
        status: TaskStatus | None = None,
        worker_id: str | None = None,
        newest: int | None = None,
    ) -> list[TaskState]:
        """Copies of the tasks that match (``newest``: only that many, the latest
        submitted, chosen before anything is copied)."""
        matching: Iterable[TaskState] = (
            task
            for task in self._tasks.values()
            if (status is None or task.status == status)
            and (worker_id is None or task.target_worker_id == worker_id)
        )
        if newest is not None:
            matching = heapq.nlargest(newest, matching, key=lambda task: task.submitted_at)
        return [task.copy() for task in matching]

    def reserved(self) -> dict[str, tuple[float, float, float, int]]:
        """Per worker: CPU, memory and GPUs its unfinished tasks asked for, and how many."""
        totals: dict[str, tuple[float, float, float, int]] = {}
        for task in self._tasks.values():
            if task.status.finished:
                continue
            cpu, memory, gpu, count = totals.get(task.target_worker_id, (0.0, 0.0, 0.0, 0))
            totals[task.target_worker_id] = (
                cpu + task.req_cpu,
                memory + task.req_memory,
                gpu + task.req_gpu,
                count + 1,
            )
        return totals

    def counts(self) -> dict[TaskStatus, int]:
        counts: dict[TaskStatus, int] = {}
        for task in self._tasks.values():
            counts[task.status] = counts.get(task.status, 0) + 1
        return counts

    # -- lost tasks and tasks waiting for their worker ----------------------------------------

    def _wait_for(self, worker_id: str, task_id: str, deadline: float) -> None:
        self._waiting.setdefault(worker_id, {})[task_id] = deadline
        if self._placed_retry(task_id):
            self._waiting_placement.add(task_id)

    def worker_registered(self, worker_id: str) -> None:
        """The worker (re)registered: hand it the tasks that wait for it, in order. The
        next attempts of "any worker" tasks that wait for a worker (this one or another
        that is away) are placed again now, as when their back-off ended."""
        waiting = list(self._waiting.pop(worker_id, {}))
        # Each placed once per wait: a burst of registrations (a master's restart) does
        # not place the same attempt again for every worker that comes back.
        placed = {task_id for task_id in self._waiting_placement if self._placed_retry(task_id)}
        self._waiting_placement.clear()
        own = [task_id for task_id in waiting if task_id not in placed]
        for task_id in placed:
            self._retry_later(task_id, self._tasks[task_id].attempt, 0.0)
        if not own:
            return
        task = asyncio.get_running_loop().create_task(
            self._dispatch_waiting(own), name=f"dispatch-{worker_id}"
        )
        self._dispatching.add(task)
        task.add_done_callback(self._dispatching.discard)

    def _placed_retry(self, task_id: str) -> bool:
        """Whether ``task_id`` is an "any worker" task's next attempt, not handed over."""
        task = self._tasks.get(task_id)
        return (
            task is not None
            and task.any_worker
            and task.status is TaskStatus.QUEUED
            and task.retry_at is not None
        )

    async def _dispatch_waiting(self, task_ids: Sequence[str]) -> None:
        for task_id in task_ids:
            task = self._tasks.get(task_id)
            if task is None or task.status is not TaskStatus.QUEUED:
                continue
            try:
                await self._dispatch(task.copy())
            except TaskError as exc:
                log.info("task %s not handed to its worker: %s", task_id, exc)

    def start(self) -> None:
        """Watch for lost tasks and expired waits, about once a second; hand over the next
        attempts of the tasks loaded waiting for them, each when its back-off ends."""
        if self._checker is None:
            self._checker = asyncio.get_running_loop().create_task(
                self._check_loop(), name="task-watch"
            )
        resumed, self._resumed = self._resumed, []
        for task_id in resumed:
            task = self._tasks.get(task_id)
            if task is not None and task.status is TaskStatus.QUEUED and task.retry_at is not None:
                self._schedule_retry(task)

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.check(self._clock())

    async def check(self, now: float) -> Sequence[str]:
        """Mark lost what is lost by ``now``; the ids of the tasks marked lost."""
        lost = self._watch.check(now)
        for worker_id, waiting in list(self._waiting.items()):
            for task_id, deadline in list(waiting.items()):
                if now >= deadline:
                    del waiting[task_id]
                    lost.append((task_id, f"its worker {worker_id!r} did not connect in time"))
            if not waiting:
                del self._waiting[worker_id]
        marked = []
        for task_id, reason in lost:
            if await self._mark_lost(task_id, reason):
                marked.append(task_id)
        return marked

    async def _mark_lost(self, task_id: str, reason: str) -> bool:
        async with self._exclusive(task_id):
            task = self._tasks.get(task_id)
            if task is None:
                return False
            event = TaskEvent.EXPIRED if task.status is TaskStatus.QUEUED else TaskEvent.LOST
            if task.message.startswith(UNCONFIRMED_PREFIX):
                event = TaskEvent.LOST
            if not can(task.status, event):
                return False
            task = task.copy()
            now = self._clock()
            if event is TaskEvent.LOST and task.retries_left:
                ended = FinishedAttempt(
                    attempt=task.attempt,
                    worker_id=task.target_worker_id,
                    status=TaskStatus.LOST,
                    finished_at=now,
                    message=f"lost: {reason}",
                    started_at=task.started_at,
                )
                change = self._retry_change(task, ended)
            else:
                task.status = next_status(task.status, event)
                task.message = f"lost: {reason}"
                task.finished_at = now
                task.retry_at = None
                change = TaskChange(task)
            try:
                await self._commit(change)
            except NotStored:
                self._watch.assigned(task_id, task.target_worker_id, self._clock())
                return False
        log.warning("task %s of worker %s is lost: %s", task_id, task.target_worker_id, reason)
        if change.finished_attempt is not None:
            self._schedule_retry(change.task)
        return True

    async def close(self) -> None:
        for task in [self._checker, *self._dispatching]:
            if task is not None:
                task.cancel()
        for task in [self._checker, *self._dispatching]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._checker = None
        self._dispatching.clear()
        self._listeners.clear()
        self._assignment_listeners.clear()
