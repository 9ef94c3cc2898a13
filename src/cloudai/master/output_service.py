"""TaskOutputs: the use cases of live task output, between the task book and the store.

- ``append``: one AppendTaskOutput from a worker (its identity already checked by the
  gRPC service): the task must be one this master assigned to that worker, the attempt
  one it issued; the chunk then goes to the store (``task_output.py``).
- ``read``: a range of one run's output for the API, optionally waiting (long poll)
  until there are bytes past ``offset`` or the run has ended.
- ``prune``: the output of tasks finished longer ago than ``retention`` is deleted
  (every ``PRUNE_EVERY`` seconds while the master runs; the task and its logs stay); a
  read of it then says so (``OutputDeleted``).

A run's output is complete when its final chunk came, or when the run ended without one
(its result is recorded, it was retried, lost or cancelled) and either nothing of it is
held (a worker that does not stream: the Go worker) or ``END_GRACE`` seconds have
passed since (a worker that stopped before its last chunk; a streaming worker sends its
output before the result, but after an outage the two may cross).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloudai.master.task_output import MAX_CHUNK_BYTES, RunSnapshot, TaskOutputStore
from cloudai.master.tasks import TaskBook, TaskError, TaskState
from cloudai.proto import pb
from cloudai.validation import InvalidMessage, check_id

log = logging.getLogger(__name__)

PRUNE_EVERY = 600.0
"""Seconds between two passes of the retention (a quarter of the retention when that is
shorter, at least a second)."""
MAX_WAIT_SECONDS = 30.0
"""The longest a range request may wait for new bytes (``wait``)."""
END_GRACE = 10.0
"""After a run ended without its final chunk: how long more of its output may come."""


class OutputRefused(Exception):
    """A chunk this master refuses for good (not its task, not that worker's, an attempt
    it never issued): answered ``success=false`` with ``next_offset = offset``."""


@dataclass(frozen=True, slots=True)
class OutputRange:
    """An answer of ``GET /api/tasks/{task_id}/output``."""

    task_id: str
    attempt: int
    offset: int
    data: bytes
    size: int  # bytes held
    complete: bool  # nothing more will come
    truncated: bool  # the run wrote more than the master keeps (the first part is kept)

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.data)


def check_chunk(chunk: pb.TaskOutput) -> None:
    """What makes a TaskOutput invalid whoever sends it (``InvalidMessage``)."""
    check_id("task_id", chunk.task_id)
    check_id("worker_id", chunk.worker_id)
    if chunk.attempt < 0:
        raise InvalidMessage(f"attempt must be >= 0, got {chunk.attempt}")
    if len(chunk.data) > MAX_CHUNK_BYTES:
        raise InvalidMessage(
            f"a chunk holds at most {MAX_CHUNK_BYTES} bytes, this one {len(chunk.data)}"
        )
    if chunk.offset + len(chunk.data) >= 2**63:
        raise InvalidMessage("offset out of range")


def run_end(task: TaskState, attempt: int) -> float | None:
    """When run ``attempt`` of ``task`` ended (Unix time; 0.0 when not known), or None
    while it has not."""
    if attempt < task.attempt:
        for ended in task.attempts:
            if ended.attempt == attempt:
                return ended.finished_at
        return 0.0
    if task.status.finished:
        return task.finished_at or 0.0
    return None


def output_complete(
    snapshot: RunSnapshot, ended_at: float | None, now: float, grace: float = END_GRACE
) -> tuple[bool, float]:
    """Whether nothing more of a run's output will come, and if not yet, how long until
    that is decided by the clock alone (inf: only a change can decide it)."""
    if snapshot.final:
        return True, math.inf
    if ended_at is None:
        return False, math.inf
    if snapshot.held == 0 or now - ended_at >= grace:
        return True, math.inf
    return False, ended_at + grace - now


class TaskOutputs:
    def __init__(
        self,
        tasks: TaskBook,
        store: TaskOutputStore,
        clock: Callable[[], float] = time.time,
        *,
        retention: float = 0.0,
    ) -> None:
        """``retention``: seconds after a task finished that its output is kept (0: for
        ever)."""
        self._tasks = tasks
        self.store = store
        self._clock = clock
        self.retention = retention
        self.chunks = 0
        self.refused = 0
        self.pruned_tasks = 0
        self._pruner: asyncio.Task[None] | None = None
        tasks.add_listener(lambda task: store.task_changed(task.task_id))

    # -- retention ---------------------------------------------------------------------------

    def start(self) -> None:
        """Apply the retention now and every ``PRUNE_EVERY`` seconds (none with 0)."""
        if self.retention > 0 and self._pruner is None:
            self._pruner = asyncio.get_running_loop().create_task(
                self._prune_loop(), name="task-output-retention"
            )

    async def stop(self) -> None:
        pruner, self._pruner = self._pruner, None
        if pruner is not None:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner

    async def _prune_loop(self) -> None:
        every = min(PRUNE_EVERY, max(1.0, self.retention / 4))
        while True:
            await self.prune(self._clock())
            await asyncio.sleep(every)

    def _expired(self, task_id: str, cutoff: float) -> bool:
        try:
            task = self._tasks.get(task_id)
        except TaskError:
            return False  # not a task of this master: not ours to delete
        return task.status.finished and (task.finished_at or 0.0) < cutoff

    async def prune(self, now: float) -> int:
        """Delete the output of the tasks finished before ``now - retention``; how many."""
        if self.retention <= 0:
            return 0
        cutoff = now - self.retention
        folders = await asyncio.to_thread(self.store.folders)
        due = [task_id for task_id in folders if self._expired(task_id, cutoff)]
        if not due:
            return 0

        def delete() -> tuple[int, int]:
            done = freed = 0
            for task_id in due:
                try:
                    freed += self.store.delete(task_id, now)
                    done += 1
                except OSError as exc:
                    log.warning("task output: cannot delete %s's output: %s", task_id, exc)
            return done, freed

        done, freed = await asyncio.to_thread(delete)
        for task_id in due:
            self.store.forget(task_id)
        self.pruned_tasks += done
        log.info(
            "task output: deleted the output of %d tasks finished more than %s ago (%.1f MiB)",
            done,
            _duration(self.retention),
            freed / 2**20,
        )
        return done

    async def append(self, chunk: pb.TaskOutput) -> pb.TaskOutputAck:
        """``OutputRefused`` for a chunk that is not this worker's to send;
        ``OutputUnavailable`` when the disk refused it (send it again later)."""
        try:
            task = self._tasks.get(chunk.task_id)
        except TaskError:
            raise OutputRefused(
                f"task {chunk.task_id!r} was never assigned by this master"
            ) from None
        if task.target_worker_id != chunk.worker_id:
            raise OutputRefused(
                f"task {chunk.task_id!r} was assigned to worker {task.target_worker_id!r}, "
                f"not {chunk.worker_id!r}"
            )
        attempt = chunk.attempt or task.attempt  # 0: a worker that does not number runs
        if attempt > task.attempt:
            raise OutputRefused(
                f"task {chunk.task_id!r} has no attempt {attempt} (it is on {task.attempt})"
            )
        plan = await self.store.append(
            chunk.task_id, attempt, chunk.offset, chunk.data, chunk.final
        )
        self.chunks += 1
        if not plan.accepted:
            return pb.TaskOutputAck(
                success=False,
                message=f"gap: this master holds {plan.next_offset} bytes of the output; "
                f"send from there",
                next_offset=plan.next_offset,
            )
        message = ""
        if plan.dropped:
            message = (
                f"the master keeps the first {self.store.max_bytes} bytes of a run's output; "
                "the rest is dropped"
            )
        return pb.TaskOutputAck(success=True, message=message, next_offset=plan.next_offset)

    def _attempt(self, task: TaskState, attempt: int | None) -> int:
        if attempt is None:
            return max(1, task.attempt)
        if not 1 <= attempt <= max(1, task.attempt):
            raise TaskError(
                "not_found",
                f"task {task.task_id!r} has no attempt {attempt} "
                f"(attempts 1 to {max(1, task.attempt)})",
            )
        return attempt

    async def read(
        self, task_id: str, offset: int, limit: int, attempt: int | None = None, wait: float = 0.0
    ) -> OutputRange:
        """``TaskError("not_found")`` for an unknown task or attempt."""
        task = self._tasks.get(task_id)
        run = self._attempt(task, attempt)
        deadline = asyncio.get_running_loop().time() + min(max(wait, 0.0), MAX_WAIT_SECONDS)
        while True:
            changed = self.store.changed_event(task_id)
            data, snapshot = await self.store.read(task_id, run, offset, limit)
            task = self._tasks.get(task_id)
            complete, decided_in = output_complete(snapshot, run_end(task, run), self._clock())
            remaining = deadline - asyncio.get_running_loop().time()
            if data or complete or remaining <= 0 or limit == 0:
                return self._range(task_id, run, offset, data, snapshot, complete)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, decided_in))

    @staticmethod
    def _range(
        task_id: str, run: int, offset: int, data: bytes, snapshot: RunSnapshot, complete: bool
    ) -> OutputRange:
        return OutputRange(task_id, run, offset, data, snapshot.held, complete, snapshot.truncated)


def _duration(seconds: float) -> str:
    return f"{seconds / 86_400:g} days" if seconds >= 86_400 else f"{seconds:g} s"
