"""TaskBook: tasks the master assigned to workers, their status and their results.

submit -> AssignTask on the target worker -> "assigned" (or "rejected" with the
worker's message); seen in a heartbeat's running_tasks -> "running";
ReportTaskCompletion -> "success" / "failure" / "cancelled" with logs and exit code.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from cloudai.api.models import TaskSubmission
from cloudai.master.registry import WorkerRegistry
from cloudai.master.worker_link import WorkerLink, WorkerUnavailable
from cloudai.proto import pb
from cloudai.task_status import RESULT_STATUSES, TERMINAL_STATUSES, TaskStatus
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import WorkerTelemetry
from cloudai.validation import InvalidMessage, check_id

log = logging.getLogger(__name__)


class TaskError(Exception):
    """A refused task operation. ``kind``: invalid, not_found, conflict or unavailable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_submission(request: TaskSubmission) -> None:
    """What the model's types cannot say: id characters, and something to run."""
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

    def copy(self) -> TaskState:
        return replace(self)

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
        )


TaskListener = Callable[[TaskState], None]
# (task_id, worker_id, acknowledged, message): one per AssignTask attempt
AssignmentListener = Callable[[str, str, bool, str], None]


class TaskBook:
    def __init__(
        self,
        registry: WorkerRegistry,
        link: WorkerLink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._link = link
        self._clock = clock
        self._tasks: dict[str, TaskState] = {}
        self._listeners: list[TaskListener] = []
        self._assignment_listeners: list[AssignmentListener] = []

    def add_listener(self, listener: TaskListener) -> None:
        """``listener(task_copy)`` after every change (persistence hooks in here)."""
        self._listeners.append(listener)

    def add_assignment_listener(self, listener: AssignmentListener) -> None:
        """``listener(task_id, worker_id, acknowledged, message)`` after each AssignTask."""
        self._assignment_listeners.append(listener)

    def _assigned(self, task: TaskState, acknowledged: bool, message: str) -> None:
        for listener in self._assignment_listeners:
            listener(task.task_id, task.target_worker_id, acknowledged, message)

    def load(self, task: TaskState) -> None:
        self._tasks[task.task_id] = task.copy()

    def _changed(self, task: TaskState) -> None:
        for listener in self._listeners:
            listener(task.copy())

    # -- operations -------------------------------------------------------------------------

    async def submit(self, request: TaskSubmission) -> TaskState:
        check_submission(request)
        worker_id = request.worker_id
        if worker_id not in self._registry:
            raise TaskError("not_found", f"unknown worker {worker_id!r}")
        if not self._registry.has_session(worker_id):
            raise TaskError("unavailable", f"worker {worker_id!r} has not registered yet")
        task_id = request.task_id or f"task-{uuid.uuid4().hex[:12]}"
        if task_id in self._tasks:
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
        )
        self._tasks[task_id] = task
        self._changed(task)
        try:
            ack = await self._link.assign_task(worker_id, task.to_proto())
        except WorkerUnavailable as exc:
            self._assigned(task, False, str(exc))
            self._finish(task, TaskStatus.REJECTED, str(exc))
            raise TaskError("unavailable", str(exc)) from None
        self._assigned(task, ack.success, ack.message)
        if ack.success:
            if task.status is TaskStatus.QUEUED:  # a fast task may have reported back
                task.status = TaskStatus.ASSIGNED
            task.message = ack.message
            self._changed(task)
        else:
            self._finish(task, TaskStatus.REJECTED, ack.message or "refused by the worker")
        return task.copy()

    async def cancel(self, task_id: str) -> TaskState:
        task = self._require(task_id)
        if task.status in TERMINAL_STATUSES:
            raise TaskError("conflict", f"task {task_id} already finished ({task.status})")
        try:
            ack = await self._link.cancel_task(task.target_worker_id, task_id)
        except WorkerUnavailable as exc:
            raise TaskError("unavailable", str(exc)) from None
        if not ack.success:
            raise TaskError("conflict", ack.message or "the worker refused to cancel")
        task.message = ack.message or "cancellation requested"
        self._changed(task)
        return task.copy()

    async def record_result(self, result: pb.TaskResult) -> tuple[bool, str]:
        """A worker's ReportTaskCompletion, bound to what this master issued: a result
        for a task it never assigned to that worker is refused, and a task is finished
        once. A repeated delivery of the recorded result is acknowledged (idempotent)."""
        task = self._tasks.get(result.task_id)
        if task is None:
            return False, f"task {result.task_id!r} was never assigned by this master"
        if task.target_worker_id != result.worker_id:
            return False, (
                f"task {result.task_id!r} was assigned to worker {task.target_worker_id!r}, "
                f"not {result.worker_id!r}"
            )
        if task.status in RESULT_STATUSES and task.finished_at is not None:
            return True, "result already recorded"
        status = (
            TaskStatus(result.status) if result.status in RESULT_STATUSES else TaskStatus.FAILURE
        )
        task.logs = result.logs
        task.logs_truncated = result.logs_truncated
        task.exit_code = result.exit_code
        task.result_location = result.result_location
        self._finish(task, status, f"reported by {result.worker_id}")
        log.info("task %s finished on %s: %s", task.task_id, result.worker_id, status)
        return True, "result recorded"

    def _finish(self, task: TaskState, status: TaskStatus, message: str) -> None:
        task.status = status
        task.message = message
        task.finished_at = self._clock()
        self._changed(task)

    def on_telemetry(self, state: WorkerTelemetry, event: TelemetryEvent) -> None:
        """Heartbeats list running tasks: mark ours "running"."""
        for running in state.running_tasks:
            task = self._tasks.get(running.task_id)
            if task is not None and task.status in (TaskStatus.QUEUED, TaskStatus.ASSIGNED):
                task.status = TaskStatus.RUNNING
                task.started_at = state.last_update
                self._changed(task)

    # -- reads ------------------------------------------------------------------------------

    def _require(self, task_id: str) -> TaskState:
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskError("not_found", f"unknown task {task_id!r}")
        return task

    def get(self, task_id: str) -> TaskState:
        return self._require(task_id).copy()

    def list(
        self, status: TaskStatus | None = None, worker_id: str | None = None
    ) -> list[TaskState]:
        return [
            task.copy()
            for task in self._tasks.values()
            if (status is None or task.status == status)
            and (worker_id is None or task.target_worker_id == worker_id)
        ]

    def counts(self) -> dict[TaskStatus, int]:
        counts: dict[TaskStatus, int] = {}
        for task in self._tasks.values():
            counts[task.status] = counts.get(task.status, 0) + 1
        return counts

    async def close(self) -> None:
        self._listeners.clear()
        self._assignment_listeners.clear()
