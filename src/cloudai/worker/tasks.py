"""TaskManager: accepts, runs, lists, cancels and finishes the worker's tasks.

Accepting is quick (checks, reservation of the requested resources, a background
asyncio task); the AssignTask handler acknowledges at once. A finished task's
pb.TaskResult is written to the result spool *before* the task leaves the running
list and before anyone tries to deliver it (see results_spool.py).

Time limits are the TaskManager's, so they hold for every runtime: a task with
``time_limit_seconds`` > 0 that has run that long (counted from the moment its runtime
started it) is cancelled like any other (SIGTERM, SIGKILL after the grace period) and
reported as a "failure" with reason "timed out".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudai.proto import pb
from cloudai.validation import InvalidMessage, check_id
from cloudai.worker.output_stream import OutputStreams
from cloudai.worker.recovery import (
    StreamFile,
    find_interrupted,
    find_streams,
    interrupted_result,
    marker_attempt,
    remove_marker,
    streams_to_resume,
    write_marker,
)
from cloudai.worker.results_spool import ResultSpool
from cloudai.worker.runtimes.base import (
    Runtime,
    RuntimeStartError,
    TaskHandle,
    TaskOutcome,
    TaskSpec,
    TaskUsage,
)
from cloudai.worker.runtimes.logs import render_logs
from cloudai.worker.samplers import MachineTotals

log = logging.getLogger(__name__)

_EPSILON = 1e-9
START_FAILED_EXIT_CODE = -1

SUCCESS, FAILURE, CANCELLED = "success", "failure", "cancelled"
TIMED_OUT = "timed out"  # TaskResult.reason of a task stopped at its time limit


@dataclass(slots=True)
class RunningEntry:
    spec: TaskSpec
    runtime: Runtime
    task_dir: Path
    accepted_at: float = field(default_factory=time.time)
    handle: TaskHandle | None = None
    runner: asyncio.Task[None] | None = None
    usage: TaskUsage = field(default_factory=TaskUsage)
    cancel_reason: str | None = None
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float | None = None  # time.monotonic() when the runtime started it
    timed_out: bool = False


def _remove_all(streams: list[StreamFile]) -> None:
    for stream in streams:
        with contextlib.suppress(OSError):
            stream.path.unlink()


def _amount(value: float, unit: str) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{text} {unit}"


class TaskManager:
    def __init__(
        self,
        worker_id: str,
        totals: MachineTotals,
        work_dir: Path,
        spool: ResultSpool,
        process_runtime: Runtime,
        docker_runtime: Runtime,
        kill_grace: float = 5.0,
        max_log_bytes: int = 1024 * 1024,
        storage_free_gb: Callable[[], float] | None = None,
        on_result: Callable[[pb.TaskResult], None] | None = None,
        output: OutputStreams | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.totals = totals
        self.tasks_dir = work_dir / "tasks"
        self.spool = spool
        self.process_runtime = process_runtime
        self.docker_runtime = docker_runtime
        self.kill_grace = kill_grace
        self.max_log_bytes = max_log_bytes
        self._storage_free_gb = storage_free_gb
        self._on_result = on_result
        self._output = output  # live output to the master (docs/TASK_OUTPUT.md)
        self._entries: dict[str, RunningEntry] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.accepting = True
        self.finished_count = 0

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # -- capacity ---------------------------------------------------------------------------

    def allocated(self) -> dict[str, float]:
        specs = [e.spec for e in self._entries.values()]
        return {
            "cpu": sum(s.req_cpu for s in specs),
            "memory": sum(s.req_memory for s in specs),
            "storage": sum(s.req_storage for s in specs),
            "gpu": sum(s.req_gpu for s in specs),
        }

    def capacity_refusal(self, spec: TaskSpec) -> str | None:
        used = self.allocated()
        totals = self.totals
        checks = (
            ("CPU cores", spec.req_cpu, totals.cpu_cores, used["cpu"], "cores"),
            ("memory", spec.req_memory, totals.memory_gb, used["memory"], "GiB"),
            ("storage", spec.req_storage, totals.storage_gb, used["storage"], "GiB"),
            ("GPUs", spec.req_gpu, totals.gpu_count, used["gpu"], "GPUs"),
        )
        for what, wanted, total, in_use, unit in checks:
            free = max(0.0, total - in_use)
            if wanted > free + _EPSILON:
                return (
                    f"task {spec.task_id!r} requests {_amount(wanted, unit)} of {what} but worker"
                    f" {self.worker_id} has {_amount(free, unit)} free"
                    f" ({_amount(total, unit)} in all, {_amount(in_use, unit)} allocated)"
                )
        if spec.req_storage > 0 and self._storage_free_gb is not None:
            disk_free = self._storage_free_gb()
            if spec.req_storage > disk_free + _EPSILON:
                return (
                    f"task {spec.task_id!r} requests {_amount(spec.req_storage, 'GiB')} of storage"
                    f" but the disk of worker {self.worker_id} has"
                    f" {_amount(disk_free, 'GiB')} free"
                )
        return None

    # -- assign -----------------------------------------------------------------------------

    def _static_refusal(self, task: pb.Task) -> str | None:
        if not self.accepting:
            return f"worker {self.worker_id} is shutting down and accepts no tasks"
        try:
            check_id("task_id", task.task_id)
        except InvalidMessage as exc:
            return f"invalid task: {exc}"
        if task.target_worker_id and task.target_worker_id != self.worker_id:
            return (
                f"task {task.task_id!r} is meant for worker {task.target_worker_id!r},"
                f" not {self.worker_id!r}"
            )
        if task.task_id in self._entries:
            return f"task {task.task_id!r} is already running on worker {self.worker_id}"
        spooled = self.spool.attempt(task.task_id)
        if spooled is not None and (task.attempt == 0 or spooled >= task.attempt):
            # A result of an earlier attempt may still wait for delivery: the master
            # moved on (it ignores that result), so the next attempt may run.
            return (
                f"task {task.task_id!r} already ran on worker {self.worker_id};"
                " its result is waiting for delivery"
            )
        if not task.docker_image.strip() and not task.command.strip():
            return f"task {task.task_id!r} has neither docker_image nor command: nothing to run"
        for name in ("req_cpu", "req_memory", "req_storage", "req_gpu", "time_limit_seconds"):
            value = getattr(task, name)
            if not math.isfinite(value) or value < 0:
                return f"task {task.task_id!r}: {name} must be a finite number >= 0, got {value!r}"
        return self.capacity_refusal(TaskSpec.from_proto(task))

    def runtime_for(self, spec: TaskSpec) -> Runtime:
        return self.docker_runtime if spec.docker_image.strip() else self.process_runtime

    async def assign(self, task: pb.Task) -> tuple[bool, str]:
        """Accept ``task`` and start it in the background, or say why not."""
        refusal = self._static_refusal(task)
        if refusal is not None:
            log.info("refused task %r: %s", task.task_id, refusal)
            return False, refusal
        spec = TaskSpec.from_proto(task)
        runtime = self.runtime_for(spec)
        entry = RunningEntry(spec, runtime, self.tasks_dir / spec.task_id)
        self._entries[spec.task_id] = entry  # reserve while the runtime is asked
        try:
            refusal = await runtime.refusal(spec)
        except Exception as exc:
            refusal = f"the {runtime.name} runtime cannot take task {spec.task_id!r}: {exc}"
        if refusal is None and self.accepting:
            try:
                await asyncio.to_thread(write_marker, entry.task_dir, self._marker(entry))
            except OSError as exc:
                refusal = f"worker {self.worker_id} cannot create the task directory: {exc}"
        if refusal is not None or not self.accepting:
            del self._entries[spec.task_id]
            refusal = refusal or f"worker {self.worker_id} is shutting down and accepts no tasks"
            log.info("refused task %r: %s", spec.task_id, refusal)
            return False, refusal
        entry.runner = asyncio.get_running_loop().create_task(
            self._run(entry), name=f"task-{spec.task_id}"
        )
        log.info("accepted task %s (%s runtime)", spec.task_id, runtime.name)
        return True, f"task {spec.task_id!r} accepted by worker {self.worker_id} ({runtime.name})"

    # -- run --------------------------------------------------------------------------------

    def _marker(self, entry: RunningEntry) -> dict[str, object]:
        spec = entry.spec
        marker: dict[str, object] = {
            "task_id": spec.task_id,
            "runtime": entry.runtime.name,
            "command": spec.command,
            "docker_image": spec.docker_image,
            "accepted_at": entry.accepted_at,
            "attempt": spec.attempt,
        }
        if entry.handle is not None:
            marker.update(entry.handle.identity())
        return marker

    def _env(self, entry: RunningEntry) -> dict[str, str]:
        return {
            "CLOUDAI_TASK_ID": entry.spec.task_id,
            "CLOUDAI_WORKER_ID": self.worker_id,
            "CLOUDAI_TASK_DIR": str(entry.task_dir),
        }

    async def _run(self, entry: RunningEntry) -> None:
        spec = entry.spec
        try:
            outcome: TaskOutcome | None = None
            start_error = ""
            if self._output is not None:
                self._output.begin(spec, entry.task_dir)
            if not entry.cancel_requested.is_set():
                try:
                    entry.handle = await entry.runtime.start(spec, entry.task_dir, self._env(entry))
                except RuntimeStartError as exc:
                    start_error = str(exc)
                except Exception as exc:
                    log.exception(
                        "task %s: the %s runtime failed", spec.task_id, entry.runtime.name
                    )
                    start_error = f"{type(exc).__name__}: {exc}"
            if entry.handle is not None:
                entry.started_at = time.monotonic()
                with contextlib.suppress(OSError):  # only needed after a crash
                    await asyncio.to_thread(write_marker, entry.task_dir, self._marker(entry))
                if entry.cancel_requested.is_set():
                    self._spawn(entry.handle.cancel(self.kill_grace))
                outcome = await self._wait_within_limit(entry, entry.handle)
            result = self._result(entry, outcome, start_error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never lose the result of a task to a bug here
            log.exception("task %s: unexpected error", spec.task_id)
            result = self._result(entry, None, f"worker error: {type(exc).__name__}: {exc}")
        if self._output is not None:
            self._output.end(spec)  # the rest of the output, before the result
        await asyncio.to_thread(self.spool.put, result)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(remove_marker, entry.task_dir)
        self._entries.pop(spec.task_id, None)
        self.finished_count += 1
        log.info(
            "task %s finished: %s (exit code %d)", spec.task_id, result.status, result.exit_code
        )
        if self._on_result is not None:
            self._on_result(result)

    async def _wait_within_limit(self, entry: RunningEntry, handle: TaskHandle) -> TaskOutcome:
        """The task's outcome; stops it first if it reaches its time limit."""
        limit = entry.spec.time_limit
        if limit <= 0 or entry.started_at is None:
            return await handle.wait()
        waiter = asyncio.ensure_future(handle.wait())
        try:
            remaining = limit - (time.monotonic() - entry.started_at)
            done, _ = await asyncio.wait({waiter}, timeout=max(0.0, remaining))
            if not done and not entry.cancel_requested.is_set():
                entry.timed_out = True
                log.info(
                    "task %s reached its time limit of %g s; stopping it", entry.spec.task_id, limit
                )
                self._spawn(handle.cancel(self.kill_grace))
            return await waiter
        finally:
            if not waiter.done():  # we were cancelled
                waiter.cancel()

    def _result(
        self, entry: RunningEntry, outcome: TaskOutcome | None, start_error: str
    ) -> pb.TaskResult:
        cancelled = entry.cancel_requested.is_set() and not entry.timed_out
        reason = ""
        if outcome is None:
            exit_code = START_FAILED_EXIT_CODE
            if cancelled and not start_error:
                footer = f"cancelled before it started ({entry.cancel_reason})"
            else:
                footer = f"the task could not start: {start_error}"
            tail, dropped = b"", 0
        else:
            exit_code = outcome.exit_code
            footer = f"exit code {exit_code}"
            if outcome.detail and outcome.detail != footer:
                footer += f" ({outcome.detail})"
            if entry.timed_out:
                reason = TIMED_OUT
                footer = f"timed out after {entry.spec.time_limit:g} s; {footer}"
            elif cancelled:
                footer = f"cancelled ({entry.cancel_reason}); {footer}"
            elif exit_code != 0 and outcome.reason:
                reason = outcome.reason
                footer = f"{reason}: {footer}"
            tail, dropped = outcome.log_tail, outcome.dropped_bytes
        if cancelled:
            status = CANCELLED
        elif outcome is not None and exit_code == 0 and not entry.timed_out:
            status = SUCCESS
        else:
            status = FAILURE
        logs, truncated = render_logs(tail, dropped, footer)
        return pb.TaskResult(
            task_id=entry.spec.task_id,
            worker_id=self.worker_id,
            status=status,
            logs=logs,
            result_location=str(entry.task_dir),
            exit_code=exit_code,
            logs_truncated=truncated,
            reason=reason,
            attempt=entry.spec.attempt,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- recovery ---------------------------------------------------------------------------

    async def recover_interrupted(self) -> int:
        """At start-up: report tasks that were running when the worker died (see
        recovery.py); returns how many."""
        markers = await asyncio.to_thread(find_interrupted, self.tasks_dir)
        runtimes = {r.name: r for r in (self.process_runtime, self.docker_runtime)}
        for marker in markers:
            task_id = str(marker["task_id"])
            task_dir = self.tasks_dir / task_id
            runtime = runtimes.get(str(marker.get("runtime")))
            if runtime is not None:
                try:
                    await runtime.cleanup_interrupted(marker)
                except Exception:
                    log.exception("task %s: cleaning up after the interruption failed", task_id)
            result = await asyncio.to_thread(
                interrupted_result, self.worker_id, marker, task_dir, self.max_log_bytes
            )
            # A spooled result of this run (it finished; the worker died before the
            # marker went) wins; one of an earlier attempt is replaced: the master waits
            # for this run's.
            stored = await asyncio.to_thread(self.spool.attempt, task_id)
            if stored is None or stored < result.attempt:
                await asyncio.to_thread(self.spool.put, result)
            await asyncio.to_thread(remove_marker, task_dir)
            log.warning("task %s was interrupted by a worker stop; reported as failed", task_id)
        if self._output is not None:
            await self._resume_output(markers)
        return len(markers)

    async def _resume_output(self, markers: list[dict[str, Any]]) -> None:
        """The live output of runs an earlier process did not finish sending: resumed
        where the run's result is still to be delivered (it waits for the output, as
        after a live run), deleted otherwise (recovery.py). Call before results are
        delivered."""
        assert self._output is not None
        streams = await asyncio.to_thread(find_streams, self.tasks_dir)
        if not streams:
            return
        runs = [(str(m["task_id"]), marker_attempt(m)) for m in markers]
        runs += [(r.task_id, r.attempt) for r in await asyncio.to_thread(self.spool.pending)]
        resume, orphans = streams_to_resume(streams, runs)
        resumed = sum(
            self._output.resume(stream.task_id, attempt, stream.path.parent)
            for stream, attempt in resume
        )
        if resumed:
            log.info(
                "live output of %d run(s) from before this start: sending the rest to the"
                " master before their results",
                resumed,
            )
        if orphans:
            await asyncio.to_thread(_remove_all, orphans)
            names = ", ".join(str(s.path.relative_to(self.tasks_dir)) for s in orphans[:3])
            more = f" and {len(orphans) - 3} more" if len(orphans) > 3 else ""
            log.warning(
                "removed %d live output file(s) of runs whose results were already delivered"
                " (the master no longer waits for their output): %s%s",
                len(orphans),
                names,
                more,
            )

    # -- cancel -----------------------------------------------------------------------------

    async def cancel(
        self, task_id: str, reason: str = "cancelled by the master"
    ) -> tuple[bool, str]:
        """Start cancelling ``task_id``; returns at once (the result follows)."""
        entry = self._entries.get(task_id)
        if entry is None:
            if task_id and self.spool.contains(task_id):
                return False, f"task {task_id!r} has already finished on worker {self.worker_id}"
            return False, f"task {task_id!r} is not running on worker {self.worker_id}"
        if entry.cancel_requested.is_set():
            return True, f"task {task_id!r} is already being cancelled"
        entry.cancel_reason = reason
        entry.cancel_requested.set()
        if entry.handle is not None:
            self._spawn(entry.handle.cancel(self.kill_grace))
        log.info("cancelling task %s: %s", task_id, reason)
        return True, (
            f"cancelling task {task_id!r} on worker {self.worker_id}"
            f" (SIGTERM, SIGKILL after {self.kill_grace:g} s)"
        )

    # -- telemetry --------------------------------------------------------------------------

    async def sample_usage(self) -> None:
        """Measure every running task (in one worker thread)."""
        handles = [(e, e.handle) for e in self._entries.values() if e.handle is not None]
        if not handles:
            return

        def measure() -> list[TaskUsage | None]:
            usages: list[TaskUsage | None] = []
            for _entry, handle in handles:
                try:
                    usages.append(handle.usage())
                except Exception:
                    usages.append(None)
            return usages

        for (entry, _handle), usage in zip(handles, await asyncio.to_thread(measure), strict=True):
            if usage is not None:
                entry.usage = usage

    def running_tasks(self) -> list[pb.RunningTask]:
        """For heartbeats: every accepted, unfinished task with its last measured usage."""
        return [
            pb.RunningTask(
                task_id=e.spec.task_id,
                cpu_allocated=e.spec.req_cpu,
                memory_allocated=e.spec.req_memory,
                gpu_allocated=e.spec.req_gpu,
                status="running",
                cpu_usage=e.usage.cpu_percent,
                memory_used_bytes=e.usage.memory_bytes,
            )
            for e in self._entries.values()
        ]

    # -- shutdown ---------------------------------------------------------------------------

    async def wait_all(self, timeout: float | None) -> bool:
        """Wait until no task runs; False on timeout."""
        runners = [e.runner for e in self._entries.values() if e.runner is not None]
        if runners:
            _done, pending = await asyncio.wait(runners, timeout=timeout)
            if pending:
                return False
        return not self._entries

    async def drain(self, timeout: float, hurry: asyncio.Event | None = None) -> None:
        """Refuse new tasks; wait up to ``timeout`` s for running ones (less if ``hurry``
        is set meanwhile), then cancel the rest and wait for their results."""
        self.accepting = False
        if not self._entries:
            return
        log.info("waiting up to %.1f s for %d running task(s)", timeout, len(self._entries))
        waiter = asyncio.ensure_future(self.wait_all(timeout))
        waiters: set[asyncio.Future[Any]] = {waiter}
        if hurry is not None:
            waiters.add(asyncio.ensure_future(hurry.wait()))
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if waiter in done and waiter.result():
            return
        for task_id in list(self._entries):
            await self.cancel(task_id, reason="the worker is shutting down")
        if not await self.wait_all(self.kill_grace + 10.0):
            log.error("tasks still running after cancellation: %s", ", ".join(self._entries))

    async def close(self) -> None:
        """Stop background work (runners are left to drain())."""
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
