"""A task's lifecycle as one explicit state machine. Pure: no clock of its own, no I/O.

    queued ──assigned──▶ assigned ──seen running──▶ running ──result──▶ success/failure/
      │                     │                          │                 cancelled/timed_out
      ├──refused──▶ rejected└──lost──▶ lost            └──lost──▶ lost
      └──expired──▶ lost   (never seen running          (vanished from its worker's
        (its worker did     by the deadline)             heartbeats: it ended, or its
         not come back)                                  worker restarted, without a result)

A result always wins: whatever the master believed, a worker's report of how the task
ended is the truth (a task believed lost may still report). A task with retries left
that fails, times out or is lost is ``retried`` instead: back to queued, as its next
attempt (the finished one is kept as an attempt record). ``LostTaskWatch`` decides,
from what heartbeats show, when an assigned or running task is lost and why.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cloudai.task_status import TaskStatus


class TaskEvent(enum.Enum):
    ASSIGNED = "assigned"  # the worker acknowledged AssignTask
    REFUSED = "refused"  # the worker refused it, or could not be reached at submit
    SEEN_RUNNING = "seen running"  # a heartbeat lists it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    EXPIRED = "expired"  # queued for a worker that did not come back in time
    TIMED_OUT = "timed out"  # its worker stopped it at its time limit
    RETRIED = "retried"  # failed, timed out or lost with retries left: runs again


class InvalidTransition(ValueError):
    pass


_S, _E = TaskStatus, TaskEvent
_RESULTS = {
    _E.SUCCEEDED: _S.SUCCESS,
    _E.FAILED: _S.FAILURE,
    _E.CANCELLED: _S.CANCELLED,
    _E.TIMED_OUT: _S.TIMED_OUT,
}

TRANSITIONS: dict[tuple[TaskStatus, TaskEvent], TaskStatus] = {
    (_S.QUEUED, _E.ASSIGNED): _S.ASSIGNED,
    (_S.QUEUED, _E.REFUSED): _S.REJECTED,
    (_S.QUEUED, _E.EXPIRED): _S.LOST,
    (_S.QUEUED, _E.LOST): _S.LOST,  # sent before a crash, its outcome never stored
    (_S.QUEUED, _E.SEEN_RUNNING): _S.RUNNING,  # a fast task listed before the ack returned
    (_S.ASSIGNED, _E.SEEN_RUNNING): _S.RUNNING,
    (_S.ASSIGNED, _E.LOST): _S.LOST,
    (_S.RUNNING, _E.LOST): _S.LOST,
    # An unreachable worker may have run it after all: its result is accepted.
    **{(_S.REJECTED, event): status for event, status in _RESULTS.items()},
    **{
        (state, event): status
        for state in (_S.QUEUED, _S.ASSIGNED, _S.RUNNING, _S.LOST)
        for event, status in _RESULTS.items()
    },
    **{(state, _E.RETRIED): _S.QUEUED for state in (_S.QUEUED, _S.ASSIGNED, _S.RUNNING)},
}


def retryable(event: TaskEvent) -> bool:
    """Whether a task with retries left runs again instead of ending with ``event``."""
    return event in (TaskEvent.FAILED, TaskEvent.TIMED_OUT, TaskEvent.LOST)


def next_status(status: TaskStatus, event: TaskEvent) -> TaskStatus:
    """The status after ``event``; InvalidTransition if the machine has no such edge."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise InvalidTransition(f"a {status} task cannot be {event.value}") from None


def can(status: TaskStatus, event: TaskEvent) -> bool:
    return (status, event) in TRANSITIONS


@dataclass(slots=True)
class _Watched:
    worker_id: str
    since: float  # when it was assigned (or last seen running)
    seen_running: bool = False
    missing_since: float | None = None  # running, then no longer listed


@dataclass(slots=True)
class LostTaskWatch:
    """When does an assigned or running task count as lost? Pure: times are passed in.

    - assigned, never listed as running by its worker within ``start_deadline``:
      "its worker never ran it" (the Go worker drops a task it cannot run at once);
    - running, then missing from the worker's heartbeats for ``vanish_grace`` with no
      result: "it vanished from its worker's heartbeats without a result" (also what a
      worker that restarted without it looks like).
    """

    start_deadline: float
    vanish_grace: float
    _tasks: dict[str, _Watched] = field(default_factory=dict)

    def assigned(self, task_id: str, worker_id: str, now: float) -> None:
        self._tasks[task_id] = _Watched(worker_id, now)

    def finished(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def heartbeat(self, worker_id: str, running: set[str], now: float) -> None:
        """A heartbeat of ``worker_id`` listing the ``running`` task ids."""
        for task_id, watched in self._tasks.items():
            if watched.worker_id != worker_id:
                continue
            if task_id in running:
                watched.seen_running = True
                watched.missing_since = None
            elif watched.seen_running and watched.missing_since is None:
                watched.missing_since = now

    def check(self, now: float) -> list[tuple[str, str]]:
        """(task id, reason) of the tasks lost by ``now``; they are no longer watched."""
        lost: list[tuple[str, str]] = []
        for task_id, watched in self._tasks.items():
            if not watched.seen_running and now - watched.since >= self.start_deadline:
                lost.append(
                    (
                        task_id,
                        f"its worker never listed it as running within "
                        f"{self.start_deadline:g} s of accepting it",
                    )
                )
            elif (
                watched.missing_since is not None
                and now - watched.missing_since >= self.vanish_grace
            ):
                lost.append((task_id, "it vanished from its worker's heartbeats without a result"))
        for task_id, _reason in lost:
            del self._tasks[task_id]
        return lost
