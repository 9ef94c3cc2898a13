"""Request and response models of the master's JSON API.

One definition serves the handlers (validation of bodies and query values), the
OpenAPI document, the console and the CLI's client, so they cannot drift apart. The
JSON field names and shapes are a user interface: add fields, never rename or remove.
Requests refuse unknown fields and values of the wrong JSON type (``"1"`` is not a
number); responses ignore unknown fields when a client reads them, so an older client
keeps working against a newer master.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from cloudai.history.tiers import METRICS as HISTORY_METRICS
from cloudai.identifiers import ID_PATTERN, ID_RULE, MAX_ID_LENGTH, check_id
from cloudai.security.tokens import MAX_TOKEN_LENGTH, Scope
from cloudai.task_status import TaskStatus


def _id(value: str, info: ValidationInfo) -> str:
    return check_id(info.field_name or "id", value)


def _optional_id(value: str, info: ValidationInfo) -> str:
    return value and _id(value, info)


_ID_SCHEMA = {"minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": ID_PATTERN}

Identifier = Annotated[
    str,
    Field(
        json_schema_extra=_ID_SCHEMA,
        description="1 to 128 letters, digits and . _ : @ -, starting with a letter or digit",
    ),
    AfterValidator(_id),
]
"""A worker or task id. The checks run in ``check_id`` (one message for each rule); the
schema carries the same rule for the document."""

OptionalIdentifier = Annotated[
    str,
    Field(
        json_schema_extra={
            "maxLength": MAX_ID_LENGTH,
            "pattern": f"^({ID_RULE})?$",
        },
        description="empty, or an id as worker_id",
    ),
    AfterValidator(_optional_id),
]

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _integral(value: object) -> object:
    """JSON's ``3.0`` is the integer 3 (as JSON Schema says); ``3.5`` and ``"3"`` are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


MAX_TIME_LIMIT_SECONDS = 365 * 86400.0
MAX_RETRIES = 100

_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_HOST = r"([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])"
ADDRESS_PATTERN = f"^({_HOST}:{_PORT})?$"
"""A worker's address: empty, or HOST:PORT with a name or IPv4 address, or an IPv6
address in brackets, and a port 0-65535."""
_ADDRESS_RE = re.compile(f"{_HOST}:{_PORT}")


def _address(value: str) -> str:
    if value and not _ADDRESS_RE.fullmatch(value):
        raise ValueError(
            f"address {value[:60]!r} is not HOST:PORT (a name or IPv4 address, or an IPv6 "
            "address in brackets, and a port 0-65535)"
        )
    return value


Address = Annotated[
    str,
    Field(
        json_schema_extra={"maxLength": 300, "pattern": ADDRESS_PATTERN},
        description="HOST:PORT of the worker's gRPC server ([IPv6]:PORT); empty for a "
        "worker that registers itself",
    ),
    AfterValidator(_address),
]


class Request(BaseModel):
    """A request body: unknown fields are refused (a typo must not pass silently), and so
    are values of another JSON type (strict: ``"2"`` is not a number, ``1`` not a string;
    an integer is a number)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Response(BaseModel):
    """A response body: a client reading a newer master's answer ignores new fields. The
    master always sends every field, so the document marks them all required."""

    model_config = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True)


class ErrorBody(Response):
    """Every error, whatever the status code."""

    error: str = Field(description="one line that says what went wrong")


class Health(Response):
    status: str
    time: int = Field(description="Unix seconds")
    active_clients: int
    workers: int
    active_workers: int


class RunningTask(Response):
    task_id: str
    cpu_allocated: float = 0.0
    memory_allocated: float = 0.0
    gpu_allocated: float = 0.0
    status: str = "running"
    cpu_usage: float = 0.0
    memory_used_bytes: int = 0


class GpuDevice(Response):
    """One GPU of a worker, as NVML reports it (a worker with an NVIDIA driver)."""

    index: int
    name: str = ""
    uuid: str = ""
    utilization: float = Field(default=0.0, description="percent")
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    temperature_c: float | None = Field(default=None, description="null: not reported")
    power_watts: float | None = Field(default=None, description="null: not reported")


_NOT_MEASURED = "; null: not measured (not sent by the worker, e.g. a Go worker)"


class Worker(Response):
    """A worker: its registry entry and latest telemetry. Until its first heartbeat since
    this master started, ``last_update`` is null and the usage fields are 0 (unknown)."""

    worker_id: str
    address: str
    registered: bool = Field(description="has called RegisterWorker since this master started")
    total_cpu: float
    total_memory: float = Field(description="GiB, as the worker reported it")
    total_storage: float = Field(description="GiB, as the worker reported it")
    total_gpu: float
    is_active: bool = False
    cpu_usage: float = Field(default=0.0, description="percent")
    memory_usage: float = Field(default=0.0, description="percent")
    storage_usage: float = Field(default=0.0, description="percent")
    gpu_usage: float = Field(default=0.0, description="percent")
    running_tasks: list[RunningTask] = Field(default_factory=list)
    last_update: float | None = Field(default=None, description="Unix seconds")
    # Richer telemetry (additions): what the worker measured, null for what it did not.
    net_rx_bytes_per_sec: float | None = Field(default=None, description="bytes/s" + _NOT_MEASURED)
    net_tx_bytes_per_sec: float | None = Field(default=None, description="bytes/s" + _NOT_MEASURED)
    disk_read_bytes_per_sec: float | None = Field(
        default=None, description="bytes/s" + _NOT_MEASURED
    )
    disk_write_bytes_per_sec: float | None = Field(
        default=None, description="bytes/s" + _NOT_MEASURED
    )
    load_avg: list[float | None] | None = Field(
        default=None, description="[1 min, 5 min, 15 min]" + _NOT_MEASURED
    )
    memory_used_bytes: int | None = Field(default=None, description="bytes" + _NOT_MEASURED)
    memory_total_bytes: int | None = Field(default=None, description="bytes" + _NOT_MEASURED)
    storage_used_bytes: int | None = Field(default=None, description="bytes" + _NOT_MEASURED)
    storage_total_bytes: int | None = Field(default=None, description="bytes" + _NOT_MEASURED)
    gpu_memory_used_bytes: int | None = Field(
        default=None, description="bytes, all GPUs" + _NOT_MEASURED
    )
    gpu_memory_total_bytes: int | None = Field(
        default=None, description="bytes, all GPUs" + _NOT_MEASURED
    )
    gpus: list[GpuDevice] = Field(default_factory=list, description="one entry per GPU (NVML)")
    task_limits: str = Field(
        default="",
        description='how the worker holds process tasks to their requests: "cgroup-v2" or'
        ' "cgroup-v1" (enforced by the kernel), "accounted" (not enforced); "" when it did'
        " not say (a worker of an earlier version, or a Go worker)",
    )


class WorkerRegistration(Request):
    worker_id: Identifier
    address: Address = ""


class TaskSubmission(Request):
    """A task for one worker: a docker image, a command, or both (the command runs in the
    image)."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["docker_image"], "properties": {"docker_image": {"minLength": 1}}},
                {"required": ["command"], "properties": {"command": {"minLength": 1}}},
            ],
            "oneOf": [
                {
                    "required": ["worker_id"],
                    "properties": {
                        "worker_id": {"type": "string"},
                        "any_worker": {"const": False},
                    },
                },
                {
                    "required": ["any_worker"],
                    "properties": {"any_worker": {"const": True}, "worker_id": {"type": "null"}},
                },
            ],
        }
    )

    worker_id: Identifier | None = Field(
        default=None, description="the worker to run it; null with any_worker"
    )
    any_worker: bool = Field(
        default=False,
        description="place it on the least-loaded active worker whose free CPU, memory "
        "and GPUs fit the request (instead of worker_id)",
    )
    task_id: OptionalIdentifier = ""
    docker_image: str = ""
    command: str = ""
    req_cpu: NonNegative = 0.0
    req_memory: NonNegative = Field(default=0.0, description="GiB")
    req_storage: NonNegative = Field(default=0.0, description="GiB")
    req_gpu: NonNegative = 0.0
    time_limit: Annotated[float, Field(ge=0, le=MAX_TIME_LIMIT_SECONDS, allow_inf_nan=False)] = (
        Field(
            default=0.0,
            description="seconds; the worker stops the task when it has run this long and "
            "it ends timed_out (0: no limit)",
        )
    )
    retries: Annotated[int, Field(ge=0, le=MAX_RETRIES), BeforeValidator(_integral)] = Field(
        default=0,
        description="how many times to run it again when it fails, times out or is lost "
        "(each attempt is kept); a cancelled task is not run again",
    )

    @model_validator(mode="after")
    def _something_to_run(self) -> TaskSubmission:
        if not self.docker_image and not self.command:
            raise ValueError("a task needs a docker_image or a command")
        if (self.worker_id is None) == (not self.any_worker):
            raise ValueError("give either a worker_id or any_worker: true")
        return self


MAX_TASK_LIMIT = 100_000


class TaskFilter(BaseModel):
    """The query of ``GET /api/tasks``: all optional; status and worker_id exact."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: TaskStatus | None = Field(default=None, description="only tasks in this status")
    worker_id: Identifier | None = Field(default=None, description="only tasks of this worker")
    limit: Annotated[int, Field(ge=1, le=MAX_TASK_LIMIT)] | None = Field(
        default=None, description="only the newest this many (still listed oldest first)"
    )


class TaskAttempt(Response):
    """One finished run of a task that was run again."""

    attempt: int = Field(description="1 for the first run")
    worker_id: str
    status: TaskStatus
    message: str = ""
    exit_code: int | None = None
    started_at: float | None = Field(default=None, description="Unix seconds")
    finished_at: float = Field(description="Unix seconds")


class Task(Response):
    task_id: str
    worker_id: str
    docker_image: str = ""
    command: str = ""
    req_cpu: float = 0.0
    req_memory: float = 0.0
    req_storage: float = 0.0
    req_gpu: float = 0.0
    status: TaskStatus
    message: str = ""
    submitted_at: float = Field(description="Unix seconds")
    started_at: float | None = Field(default=None, description="Unix seconds")
    finished_at: float | None = Field(default=None, description="Unix seconds")
    exit_code: int | None = None
    result_location: str = ""
    time_limit: float = Field(default=0.0, description="seconds; 0: no limit")
    retries: int = Field(default=0, description="runs allowed after the first one")
    attempt: int = Field(default=1, description="the current (or last) run: 1 for the first")
    attempts: list[TaskAttempt] = Field(
        default_factory=list, description="earlier runs that failed, timed out or were lost"
    )
    any_worker: bool = Field(
        default=False,
        description="placed by the master (submitted with any_worker): each retry is placed "
        "again, on a worker the earlier runs did not use when one fits",
    )
    retry_at: float | None = Field(
        default=None,
        description="Unix seconds: when the next attempt is handed over, while the task "
        "is queued for it after a failed run; null otherwise",
    )


class TaskWithLogs(Task):
    logs: str = Field(default="", description="stdout and stderr as the worker reported them")
    logs_truncated: bool = False


class TaskLogs(Response):
    task_id: str
    status: TaskStatus
    exit_code: int | None = None
    logs: str = Field(default="", description="stdout and stderr as the worker reported them")
    logs_truncated: bool = False
    time: float = Field(description="Unix seconds when the master answered")


class SessionInfo(Response):
    """What the caller of the API may do (``GET /api/session``)."""

    secured: bool = Field(description="the master requires API tokens (false: --insecure)")
    scope: Scope | None = Field(
        default=None,
        description="the scope of the token the call carried: read or admin (null on a "
        "master run with --insecure, where the historic rule applies: reads open, "
        "changes from loopback or with CLOUDAI_ADMIN_TOKEN)",
    )


class ClusterSummary(Response):
    workers: int = Field(description="workers in the registry")
    workers_reporting: int = Field(description="workers with telemetry since this master started")
    active_workers: int
    tasks_running: int = Field(description="assigned or running")
    tasks_queued: int
    tasks_finished: int
    tasks_by_status: dict[str, int]
    heartbeats: int = Field(description="heartbeats accepted since this master started")
    heartbeats_per_second: float
    websocket_clients: int
    fanout_tick_ms: float = Field(
        default=0.0, description="the WebSocket fan-out's current batching tick"
    )


# -- join tokens, API tokens, joining ------------------------------------------------------

MAX_CSR_LENGTH = 8192
"""A worker's certificate signing request, PEM: a few hundred bytes in practice."""


MAX_TTL_SECONDS = 100 * 365 * 86400.0
Ttl = Annotated[float, Field(gt=0, le=MAX_TTL_SECONDS, allow_inf_nan=False, description="seconds")]


class JoinTokenInfo(Response):
    """A join token as the master lists it (never its secret)."""

    token_id: str
    created_at: float = Field(description="Unix seconds")
    expires_at: float | None = Field(default=None, description="Unix seconds; null: never")
    uses: int = Field(default=0, description="workers that joined with it")
    max_uses: int | None = Field(default=None, description="null: any number")
    worker_id: str | None = Field(default=None, description="the only worker it admits; null: any")
    revoked_at: float | None = Field(default=None, description="Unix seconds")
    description: str = ""
    state: Literal["active", "expired", "revoked", "used up"]


class ApiTokenInfo(Response):
    """An API token as the master lists it (never its secret)."""

    token_id: str
    scope: Scope
    name: str = ""
    created_at: float = Field(description="Unix seconds")
    expires_at: float | None = Field(default=None, description="Unix seconds; null: never")
    revoked_at: float | None = Field(default=None, description="Unix seconds")
    state: Literal["active", "expired", "revoked"]


class JoinTokenRequest(Request):
    """A new join token: how long it lasts, how many workers it admits, which one."""

    ttl_seconds: Ttl | None = Field(default=None, description="null: never expires")
    uses: Annotated[int, Field(ge=1, le=1_000_000), BeforeValidator(_integral)] | None = Field(
        default=None, description="null: any number of joins"
    )
    worker_id: Identifier | None = Field(default=None, description="null: any worker id")
    description: str = Field(default="", max_length=500)


class ApiTokenRequest(Request):
    """A new API token: ``read`` may look (GETs and streams), ``admin`` may do anything."""

    scope: Scope = Field(strict=False)  # "read" from Python too, not only from JSON
    name: str = Field(default="", max_length=200)
    ttl_seconds: Ttl | None = Field(default=None, description="null: never expires")


class CreatedJoinToken(Response):
    token: str = Field(description="the token's text: shown once, never again")
    info: JoinTokenInfo
    command: str = Field(description="the command line that makes a machine join with it")


class CreatedApiToken(Response):
    token: str = Field(description="the token's text: shown once, never again")
    info: ApiTokenInfo


class JoinRequest(Request):
    """A worker's request to join: a join token and a certificate signing request."""

    token: str = Field(min_length=1, max_length=MAX_TOKEN_LENGTH)
    worker_id: Identifier
    csr_pem: str = Field(min_length=1, max_length=MAX_CSR_LENGTH)


class JoinResponse(Response):
    """The worker's certificate, signed by the cluster CA, and the CA's certificate."""

    certificate_pem: str
    ca_pem: str


class ClusterCa(Response):
    """The cluster CA's certificate: what a joining worker fetches first, to compare its
    fingerprint with the one in its join token before it sends the token anywhere."""

    ca_pem: str
    fingerprint: str = Field(description="SHA-256 of the certificate's DER, lower-case hex")


# -- alerts (docs/ALERTS.md) ---------------------------------------------------------------

AlertStateName = Literal["pending", "firing", "resolved"]
Duration = Annotated[
    float | str,
    Field(description='seconds, or a duration such as "30s", "5m", "1h30m"'),
]


class AlertRuleSpec(Request):
    """A new alert rule (the fields of a ``[[rule]]`` of the rules file). The master checks
    the values (400 naming the field); the OpenAPI schema gives their types."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    name: str = Field(min_length=1, max_length=128, description="unique; an id's characters")
    kind: Literal["threshold", "worker_inactive", "worker_not_seen"] = "threshold"
    metric: str | None = Field(
        default=None,
        description="threshold rules: a numeric telemetry field (cpu_usage, memory_usage, "
        "storage_usage, gpu_usage, running_tasks, net_rx_bytes_per_sec, load_avg_1m, ...)",
    )
    comparison: Literal[">", ">=", "<", "<="] | None = None
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    resolve_threshold: float | None = Field(
        default=None, allow_inf_nan=False, description="hysteresis; null: the threshold"
    )
    for_: Duration | None = Field(
        default=None,
        alias="for",
        description="how long the condition must hold before the alert fires; "
        "worker_not_seen: seconds after the master's start",
    )
    severity: Literal["info", "warning", "critical"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    workers: str | list[str] = Field(
        default="all", description='"all", a glob ("gpu-*") or a list of worker ids'
    )
    repeat_interval: Duration | None = Field(
        default=None, description="a firing alert is sent again this often (default 1h)"
    )
    summary: str = Field(default="", max_length=1000)


class AlertRule(Response):
    name: str
    kind: str
    source: Literal["file", "api"] = Field(description="file rules are read-only here")
    metric: str = ""
    comparison: str = ""
    threshold: float | None = None
    resolve_threshold: float | None = None
    for_seconds: float = 0.0
    severity: str
    labels: dict[str, str] = Field(default_factory=dict)
    workers: str | list[str] = "all"
    repeat_interval: float
    summary: str = ""
    expression: str = Field(description="the rule in a few words: cpu_usage > 90 for 30s")


class Alert(Response):
    """One (rule, worker) alert that is pending, firing, or recently resolved."""

    rule: str
    worker_id: str
    state: AlertStateName
    severity: str
    labels: dict[str, str]
    value: float | None = Field(default=None, description="the metric's latest value")
    since: float = Field(description="Unix seconds: when the condition began")
    fired_at: float | None = Field(default=None, description="Unix seconds")
    resolved_at: float | None = Field(default=None, description="Unix seconds")
    silenced: bool = False
    summary: str = ""


class AlertEvent(Response):
    """A transition to firing or resolved, from the history."""

    id: int
    rule: str
    worker_id: str
    state: Literal["firing", "resolved"]
    at: float = Field(description="Unix seconds")
    starts_at: float = Field(description="Unix seconds: when it began firing")
    severity: str = ""
    value: float | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    silenced: bool = False
    reason: str = ""


class AlertFilter(BaseModel):
    """The query of ``GET /api/alerts``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    state: AlertStateName | None = Field(default=None, description="only alerts in this state")


class AlertHistoryFilter(BaseModel):
    """The query of ``GET /api/alerts/history``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    rule: str | None = Field(
        default=None, min_length=1, max_length=128, description="only this rule"
    )
    worker_id: Identifier | None = Field(default=None, description="only this worker")
    limit: int = Field(default=100, ge=1, le=10_000, description="newest first, at most this many")


class SilenceMatcher(Request):
    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="a label: alertname (the rule), worker_id, severity, or a rule's label",
    )
    value: str = Field(max_length=500)
    op: Literal["=", "!=", "=~", "!~"] = Field(
        default="=", description="=~ and !~: a regular expression that matches the whole value"
    )


class SilenceRequest(Request):
    """A silence: matching alerts send nothing until it ends; give ``duration_seconds`` or
    ``ends_at``."""

    matchers: list[SilenceMatcher] = Field(min_length=1, max_length=32)
    duration_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    ends_at: float | None = Field(default=None, allow_inf_nan=False, description="Unix seconds")
    starts_at: float | None = Field(
        default=None, allow_inf_nan=False, description="Unix seconds; null: now"
    )
    comment: str = Field(default="", max_length=1000)
    created_by: str = Field(default="", max_length=200)


class SilenceInfo(Response):
    silence_id: str
    matchers: list[SilenceMatcher]
    starts_at: float = Field(description="Unix seconds")
    ends_at: float = Field(description="Unix seconds")
    created_at: float = Field(description="Unix seconds")
    created_by: str = ""
    comment: str = ""
    state: Literal["pending", "active", "expired"]


# Telemetry history (docs/HISTORY.md)


_METRIC = "|".join(HISTORY_METRICS)
HistoryMetrics = Annotated[
    str,
    Field(
        pattern=f"^( *({_METRIC}) *(, *({_METRIC}) *)*)?$",
        description="comma-separated metric names (default: every metric): "
        + ", ".join(HISTORY_METRICS),
    ),
]
UnixTime = Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False, description="Unix seconds")]
HistoryPoints = Annotated[
    int, Field(ge=1, le=10_000, description="at most this many points (default 300)")
]


class HistoryFilter(BaseModel):
    """The query of GET /api/workers/{worker_id}/history and GET /api/history."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    metrics: str | None = None  # checked by name, one clear line (HistoryMetrics documents it)
    from_: UnixTime | None = Field(default=None, alias="from")
    to: UnixTime | None = None
    points: HistoryPoints | None = None


class HistorySeries(Response):
    """One metric: a value per point of ``t`` (null: no data in that bucket)."""

    avg: list[float | None]
    min: list[float | None]
    max: list[float | None]


class ClusterHistory(Response):
    """The cluster's history: per point, the average of the workers' averages, the least
    minimum and the greatest maximum; ``workers``: how many workers had data."""

    model_config = ConfigDict(
        extra="ignore", json_schema_serialization_defaults_required=True, populate_by_name=True
    )

    tier: int = Field(description="0: every heartbeat, 1: per minute, 2: per hour")
    resolution: float = Field(description="seconds between points")
    from_: float = Field(alias="from", description="Unix seconds")
    to: float = Field(description="Unix seconds")
    t: list[float] = Field(description="each point's bucket start, Unix seconds")
    series: dict[str, HistorySeries]
    workers: list[int] = Field(description="per point, how many workers had data")


class WorkerHistory(Response):
    """One worker's history; for tier 0 min, avg and max are equal unless points group
    several heartbeats."""

    model_config = ConfigDict(
        extra="ignore", json_schema_serialization_defaults_required=True, populate_by_name=True
    )

    worker_id: str
    tier: int = Field(description="0: every heartbeat, 1: per minute, 2: per hour")
    resolution: float = Field(description="seconds between points")
    from_: float = Field(alias="from", description="Unix seconds")
    to: float = Field(description="Unix seconds")
    t: list[float] = Field(description="each point's bucket start, Unix seconds")
    series: dict[str, HistorySeries]
