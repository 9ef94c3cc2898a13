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

    @model_validator(mode="after")
    def _something_to_run(self) -> TaskSubmission:
        if not self.docker_image and not self.command:
            raise ValueError("a task needs a docker_image or a command")
        if (self.worker_id is None) == (not self.any_worker):
            raise ValueError("give either a worker_id or any_worker: true")
        return self


class TaskFilter(BaseModel):
    """The query of ``GET /api/tasks``: both optional, both exact."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: TaskStatus | None = Field(default=None, description="only tasks in this status")
    worker_id: Identifier | None = Field(default=None, description="only tasks of this worker")


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


def _integral(value: object) -> object:
    """JSON's ``3.0`` is the integer 3 (as JSON Schema says); ``3.5`` and ``"3"`` are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


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
