"""Records the store reads and writes: plain dataclasses, no database types.

All timestamps are timezone-aware; the store returns them in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from cloudai import task_status
from cloudai.task_status import TaskStatus

TASK_STATUSES: Final = frozenset(status.value for status in TaskStatus)
"""Every status a task may have (the values of the one TaskStatus type)."""

TERMINAL_TASK_STATUSES: Final = frozenset(status.value for status in task_status.TERMINAL_STATUSES)
"""Statuses after which a task does not change any more."""

RESULT_STATUSES: Final = frozenset(status.value for status in task_status.RESULT_STATUSES)
"""Statuses a worker may report in a task result."""


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


@dataclass(slots=True)
class WorkerRecord:
    """A worker in the registry."""

    worker_id: str
    address: str
    total_cpu: float = 0.0
    total_memory: float = 0.0  # GB
    total_storage: float = 0.0  # GB
    total_gpu: float = 0.0
    is_active: bool = False
    last_heartbeat: datetime | None = None
    registered_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    cert_fingerprint: str | None = None  # SHA-256 (hex) of the certificate it joined with
    task_limits: str = ""  # "cgroup-v2", "cgroup-v1", "accounted"; "": not said


@dataclass(slots=True)
class TaskRecord:
    """A task submitted to the cluster, addressed to one worker."""

    task_id: str
    target_worker_id: str
    docker_image: str = ""
    command: str = ""
    req_cpu: float = 0.0
    req_memory: float = 0.0  # GB
    req_storage: float = 0.0  # GB
    req_gpu: float = 0.0
    status: str = "queued"
    message: str = ""
    submitted_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    time_limit: float = 0.0  # seconds; 0: no limit
    max_retries: int = 0  # runs after the first one, on failure or loss
    attempt: int = 1  # the current attempt (1: the first run)
    any_worker: bool = False  # placed by the master: a retry may go to another worker
    retry_at: datetime | None = None  # queued for its next attempt, due then; not handed over


@dataclass(slots=True)
class AttemptRecord:
    """One finished run of a task that was, or could have been, retried."""

    task_id: str
    attempt: int
    worker_id: str
    status: str  # one of TERMINAL_TASK_STATUSES
    finished_at: datetime = field(default_factory=utcnow)
    message: str = ""
    exit_code: int | None = None
    logs: str = ""
    logs_truncated: bool = False
    started_at: datetime | None = None


@dataclass(slots=True)
class AssignmentRecord:
    """One attempt to hand a task to a worker (AssignTask) and the worker's answer."""

    task_id: str
    worker_id: str
    acknowledged: bool = False
    message: str = ""
    assigned_at: datetime = field(default_factory=utcnow)
    id: int | None = None  # set by the store


@dataclass(slots=True)
class ResultRecord:
    """A worker's report of a finished task. At most one per task."""

    task_id: str
    worker_id: str
    status: str  # one of RESULT_STATUSES
    logs: str = ""
    logs_truncated: bool = False
    exit_code: int | None = None
    result_location: str = ""
    received_at: datetime = field(default_factory=utcnow)
    reason: str = ""  # why a failed task ended, when its worker knows ("timed out")
    attempt: int = 1


# -- alerts ------------------------------------------------------------------------------


@dataclass(slots=True)
class AlertRuleRecord:
    """An alert rule made through the API (rules from the master's rules file are not
    stored). ``spec``: the rule as JSON, as ``cloudai.alerts.rules`` reads it."""

    name: str
    spec: str
    created_at: datetime = field(default_factory=utcnow)
    created_by: str = ""


@dataclass(slots=True)
class SilenceRecord:
    """A silence: alerts whose labels match its matchers (JSON) send nothing until
    ``ends_at``."""

    silence_id: str
    matchers: str
    starts_at: datetime
    ends_at: datetime
    created_at: datetime = field(default_factory=utcnow)
    created_by: str = ""
    comment: str = ""


@dataclass(slots=True)
class AlertEventRecord:
    """One transition of an alert to ``firing`` or ``resolved`` (the alert history)."""

    rule: str
    worker_id: str
    state: str  # "firing" or "resolved"
    at: datetime
    starts_at: datetime
    severity: str = ""
    value: float | None = None
    labels: str = "{}"  # JSON object
    silenced: bool = False
    reason: str = ""
    id: int | None = None  # set by the store
