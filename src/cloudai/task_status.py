"""TaskStatus: the one type for a task's state, used by the master, the store, the API,
the console and the views. Its values are the strings the API, the database and the
wire already carry (a worker reports "success", "failure" or "cancelled")."""

from __future__ import annotations

import enum


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"  # accepted by the master, not yet acknowledged by a worker
    ASSIGNED = "assigned"  # the worker acknowledged AssignTask
    RUNNING = "running"  # listed as running in one of the worker's heartbeats
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # the worker refused it, or could not be reached
    LOST = "lost"  # accepted, but no longer anywhere: never ran, or vanished without a result
    TIMED_OUT = "timed_out"  # stopped by its worker when it ran past its time limit

    @property
    def finished(self) -> bool:
        return self in TERMINAL_STATUSES

    @classmethod
    def parse(cls, text: str) -> TaskStatus:
        """The status named ``text`` (any case); ValueError naming the valid ones."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(status.value for status in cls)
            raise ValueError(f"unknown task status {text!r} (one of: {names})") from None


TERMINAL_STATUSES = frozenset(
    {
        TaskStatus.SUCCESS,
        TaskStatus.FAILURE,
        TaskStatus.CANCELLED,
        TaskStatus.REJECTED,
        TaskStatus.LOST,
        TaskStatus.TIMED_OUT,
    }
)
RESULT_STATUSES = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED})
"""What a worker's TaskResult may report."""
IN_FLIGHT_STATUSES = frozenset({TaskStatus.ASSIGNED, TaskStatus.RUNNING})
