"""ClusterAdmin: the admin's use cases, the one application service that the HTTP API, the
console and (through the API) the CLI all call.

It knows no HTTP and no terminal: it takes plain arguments and the request models of
``cloudai.api.models``, returns their response models, and refuses with
``AdminError`` (a kind and one line of text) that each face turns into its own answer
(an HTTP status, a red console line).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloudai import placement
from cloudai.api.models import (
    ClusterSummary,
    GpuDevice,
    RunningTask,
    Task,
    TaskAttempt,
    TaskLogs,
    TaskSubmission,
    TaskWithLogs,
    Worker,
    WorkerRegistration,
)
from cloudai.master.registry import RegistryError, WorkerEntry, WorkerRegistry
from cloudai.master.tasks import NotStored, TaskBook, TaskError, TaskState
from cloudai.master.worker_link import WorkerLink
from cloudai.task_status import IN_FLIGHT_STATUSES, TERMINAL_STATUSES, TaskStatus
from cloudai.telemetry.manager import TelemetryManager
from cloudai.telemetry.model import WorkerTelemetry


class ErrorKind(enum.Enum):
    INVALID = "invalid"  # bad input
    NOT_FOUND = "not_found"  # no such worker or task
    CONFLICT = "conflict"  # e.g. a duplicate task id, a task already finished
    UNAVAILABLE = "unavailable"  # the worker is not registered or did not answer
    UNAUTHORIZED = "unauthorized"  # a credential that does not allow it (a spent join token)
    UNPROCESSABLE = "unprocessable"  # well-formed, but unusable (a CSR that does not parse)
    GONE = "gone"  # it was there and was deleted (a task's output past its retention)


class AdminError(Exception):
    """A refused admin operation: ``kind`` says which way, the text says why."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class MasterCounters:
    """Live figures owned by other parts, read when a summary is asked for."""

    heartbeats: Callable[[], int]
    heartbeats_per_second: Callable[[], float]
    websocket_clients: Callable[[], int]
    fanout_tick: Callable[[], float]


def worker_model(entry: WorkerEntry, telemetry: WorkerTelemetry | None) -> Worker:
    """One worker for the API and the console: registry entry + latest telemetry."""
    worker = Worker(
        worker_id=entry.worker_id,
        address=entry.address,
        registered=entry.session,
        total_cpu=entry.total_cpu,
        total_memory=entry.total_memory,
        total_storage=entry.total_storage,
        total_gpu=entry.total_gpu,
        task_limits=entry.task_limits,
    )
    if telemetry is not None:
        worker.is_active = telemetry.is_active
        worker.cpu_usage = telemetry.cpu_usage
        worker.memory_usage = telemetry.memory_usage
        worker.storage_usage = telemetry.storage_usage
        worker.gpu_usage = telemetry.gpu_usage
        worker.running_tasks = [
            RunningTask.model_validate(task.to_json()) for task in telemetry.running_tasks
        ]
        worker.last_update = telemetry.last_update
        if telemetry.resources is not None:  # richer telemetry: only what the worker sent
            measured = telemetry.resources.to_json()
            gpus = measured.pop("gpus", [])
            for name, value in measured.items():
                setattr(worker, name, value)
            worker.gpus = [GpuDevice.model_validate(gpu) for gpu in gpus]
    return worker


def task_model(task: TaskState) -> Task:
    return Task(
        task_id=task.task_id,
        worker_id=task.target_worker_id,
        docker_image=task.docker_image,
        command=task.command,
        req_cpu=task.req_cpu,
        req_memory=task.req_memory,
        req_storage=task.req_storage,
        req_gpu=task.req_gpu,
        status=task.status,
        message=task.message,
        submitted_at=task.submitted_at,
        started_at=task.started_at,
        finished_at=task.finished_at,
        exit_code=task.exit_code,
        result_location=task.result_location,
        time_limit=task.time_limit,
        retries=task.max_retries,
        attempt=task.attempt,
        attempts=[
            TaskAttempt(
                attempt=ended.attempt,
                worker_id=ended.worker_id,
                status=ended.status,
                message=ended.message,
                exit_code=ended.exit_code,
                started_at=ended.started_at,
                finished_at=ended.finished_at,
            )
            for ended in task.attempts
        ],
        any_worker=task.any_worker,
        retry_at=task.retry_at if task.status is TaskStatus.QUEUED else None,
    )


def task_with_logs(task: TaskState) -> TaskWithLogs:
    return TaskWithLogs(
        **task_model(task).model_dump(), logs=task.logs, logs_truncated=task.logs_truncated
    )


def _refusal(exc: TaskError) -> AdminError:
    return AdminError(ErrorKind(exc.kind), str(exc))


class ClusterAdmin:
    def __init__(
        self,
        registry: WorkerRegistry,
        telemetry: TelemetryManager,
        tasks: TaskBook,
        link: WorkerLink,
        counters: MasterCounters,
        clock: Callable[[], float] = time.time,
        registry_committed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``registry_committed``: returns once the registry's changes so far are stored
        (raises NotStored when they are not); None: nothing to wait for (no store)."""
        self._registry_committed = registry_committed
        self._registry = registry
        self._telemetry = telemetry
        self._tasks = tasks
        self._link = link
        self._counters = counters
        self._clock = clock

    # -- workers ----------------------------------------------------------------------------

    async def authorise_worker(self, request: WorkerRegistration) -> Worker:
        """The admin's ``register``: authorise a worker, and answer once that is stored.
        When its address is known (given now or stored before), the master then calls
        its MasterRegister until it answers: every time, also for a worker that holds a
        session (re-announcing this master is how a worker that lost it rejoins)."""
        try:
            entry = self._registry.authorise(request.worker_id, request.address)
        except RegistryError as exc:
            raise AdminError(ErrorKind.INVALID, str(exc)) from None
        await self._confirm(f"worker {request.worker_id!r} is authorised")
        if entry.address:
            self._link.connect(entry.worker_id)
        return worker_model(entry, self._telemetry.get_worker_telemetry(entry.worker_id))

    async def revoke_worker(self, worker_id: str) -> None:
        """The admin's ``unregister``: answered once the removal is stored."""
        if not self._registry.revoke(worker_id):
            raise AdminError(ErrorKind.NOT_FOUND, f"unknown worker {worker_id!r}")
        self._telemetry.unregister_worker(worker_id)
        await self._confirm(f"worker {worker_id!r} is unregistered")

    async def _confirm(self, what: str) -> None:
        if self._registry_committed is None:
            return
        try:
            await self._registry_committed()
        except NotStored as exc:
            raise AdminError(
                ErrorKind.UNAVAILABLE, f"{what} in this master, but not stored yet: {exc}"
            ) from None

    def has_session(self, worker_id: str) -> bool:
        """Whether the worker has registered since this master started."""
        return self._registry.has_session(worker_id)

    def worker_ids(self) -> list[str]:
        return sorted(entry.worker_id for entry in self._registry)

    def list_workers(self) -> list[Worker]:
        telemetry = self._telemetry.get_all_worker_telemetry()
        return [worker_model(entry, telemetry.get(entry.worker_id)) for entry in self._registry]

    def get_worker(self, worker_id: str) -> Worker:
        entry = self._registry.get(worker_id)
        if entry is None:
            raise AdminError(ErrorKind.NOT_FOUND, f"unknown worker {worker_id!r}")
        return worker_model(entry, self._telemetry.get_worker_telemetry(worker_id))

    # -- tasks ------------------------------------------------------------------------------

    async def submit_task(self, request: TaskSubmission) -> Task:
        """Assign a task to a worker (``any_worker``: the least-loaded active worker whose
        free resources fit). A task the worker refused comes back with status
        ``rejected`` (and its message); an unreachable worker raises UNAVAILABLE; a worker
        that is not connected gets it when it connects (status ``queued`` until then).
        A task placed by the master is placed again for each retry."""
        placed = request.any_worker
        if placed:
            request = request.model_copy(
                update={"worker_id": self._place(request), "any_worker": False}
            )
        try:
            return task_model(await self._tasks.submit(request, placed=placed))
        except TaskError as exc:
            raise _refusal(exc) from None

    def _place(self, request: TaskSubmission) -> str:
        candidates = self._candidates()
        wanted = placement.Request(request.req_cpu, request.req_memory, request.req_gpu)
        chosen = placement.choose(candidates, wanted)
        if chosen is None:
            raise AdminError(ErrorKind.UNAVAILABLE, placement.no_fit_reason(candidates, wanted))
        return chosen.worker_id

    def place_retry(self, task: TaskState, tried: frozenset[str]) -> str | None:
        """The worker for the next attempt of an "any worker" task (TaskBook's placer)."""
        wanted = placement.Request(task.req_cpu, task.req_memory, task.req_gpu)
        chosen = placement.choose_avoiding(self._candidates(), wanted, tried)
        return None if chosen is None else chosen.worker_id

    def _candidates(self) -> list[placement.Candidate]:
        telemetry = self._telemetry.get_all_worker_telemetry()
        reserved = self._tasks.reserved()
        candidates = []
        for entry in self._registry:
            state = telemetry.get(entry.worker_id)
            cpu, memory, gpu, count = reserved.get(entry.worker_id, (0.0, 0.0, 0.0, 0))
            candidates.append(
                placement.Candidate(
                    worker_id=entry.worker_id,
                    active=state is not None and state.is_active and entry.session,
                    total_cpu=entry.total_cpu,
                    total_memory=entry.total_memory,
                    total_gpu=entry.total_gpu,
                    cpu_usage=state.cpu_usage if state else 100.0,
                    memory_usage=state.memory_usage if state else 100.0,
                    gpu_usage=state.gpu_usage if state else 100.0,
                    reserved=placement.Request(cpu, memory, gpu),
                    tasks=count,
                )
            )
        return candidates

    async def cancel_task(self, task_id: str) -> Task:
        try:
            return task_model(await self._tasks.cancel(task_id))
        except TaskError as exc:
            raise _refusal(exc) from None

    def list_tasks(
        self,
        status: TaskStatus | None = None,
        worker_id: str | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """Tasks, oldest first (``limit``: the newest that many)."""
        tasks = self._tasks.list(status=status, worker_id=worker_id, newest=limit)
        tasks.sort(key=lambda task: task.submitted_at)
        return [task_model(task) for task in tasks]

    def task_ids(self) -> list[str]:
        """Task ids, newest first (what completion offers)."""
        tasks = self._tasks.list()
        tasks.sort(key=lambda task: task.submitted_at, reverse=True)
        return [task.task_id for task in tasks]

    def _task(self, task_id: str) -> TaskState:
        try:
            return self._tasks.get(task_id)
        except TaskError as exc:
            raise _refusal(exc) from None

    def get_task(self, task_id: str) -> TaskWithLogs:
        return task_with_logs(self._task(task_id))

    def task_logs(self, task_id: str) -> TaskLogs:
        task = self._task(task_id)
        return TaskLogs(
            task_id=task.task_id,
            status=task.status,
            exit_code=task.exit_code,
            logs=task.logs,
            logs_truncated=task.logs_truncated,
            time=self._clock(),
        )

    # -- cluster ----------------------------------------------------------------------------

    def summary(self) -> ClusterSummary:
        workers, active = self._telemetry.worker_count()
        counts = self._tasks.counts()
        counters = self._counters
        return ClusterSummary(
            workers=len(self._registry),
            workers_reporting=workers,
            active_workers=active,
            tasks_running=sum(counts.get(s, 0) for s in IN_FLIGHT_STATUSES),
            tasks_queued=counts.get(TaskStatus.QUEUED, 0),
            tasks_finished=sum(counts.get(s, 0) for s in TERMINAL_STATUSES),
            tasks_by_status={str(status): n for status, n in counts.items()},
            heartbeats=counters.heartbeats(),
            heartbeats_per_second=round(counters.heartbeats_per_second(), 2),
            websocket_clients=counters.websocket_clients(),
            fanout_tick_ms=round(counters.fanout_tick() * 1000.0, 3),
        )
