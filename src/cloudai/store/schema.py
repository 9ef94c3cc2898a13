"""Table definitions (SQLAlchemy Core) shared by both back ends.

This is the schema at the newest migration: the store's queries use it and
Alembic's ``--autogenerate`` compares against it. Change it only together with a
new migration in ``migrations/versions/``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)

from cloudai.security.tokens import Scope
from cloudai.store.models import RESULT_STATUSES, TASK_STATUSES, TERMINAL_TASK_STATUSES

ID_LENGTH = 128
STATUS_LENGTH = 16
TOKEN_ID_LENGTH = 32
FINGERPRINT_LENGTH = 64  # SHA-256, hex
SCOPE_LENGTH = 16

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is refused (its zone would be a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the store needs timezone-aware times")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, returned in UTC.

    PostgreSQL keeps it as ``timestamptz``; SQLite, which has no time zones,
    keeps the UTC wall time. Naive datetimes are refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = to_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(values: frozenset[str]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(values))


metadata = MetaData(naming_convention=NAMING_CONVENTION)

workers = Table(
    "workers",
    metadata,
    Column("worker_id", String(ID_LENGTH), primary_key=True),
    Column("address", String(255), nullable=False),
    Column("total_cpu", Float, nullable=False, server_default="0"),
    Column("total_memory", Float, nullable=False, server_default="0"),
    Column("total_storage", Float, nullable=False, server_default="0"),
    Column("total_gpu", Float, nullable=False, server_default="0"),
    Column("is_active", Boolean, nullable=False, server_default=false()),
    Column("last_heartbeat", UTCDateTime, nullable=True),
    Column("registered_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # SHA-256 (hex) of the certificate the worker got when it joined; None: never joined.
    Column("cert_fingerprint", String(FINGERPRINT_LENGTH), nullable=True),
    # How the worker holds process tasks to their requests: "cgroup-v2", "cgroup-v1",
    # "accounted"; "" when it did not say (a Go worker).
    Column("task_limits", String(STATUS_LENGTH), nullable=False, server_default=""),
)

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(ID_LENGTH), primary_key=True),
    Column("docker_image", Text, nullable=False, server_default=""),
    Column("command", Text, nullable=False, server_default=""),
    Column("req_cpu", Float, nullable=False, server_default="0"),
    Column("req_memory", Float, nullable=False, server_default="0"),
    Column("req_storage", Float, nullable=False, server_default="0"),
    Column("req_gpu", Float, nullable=False, server_default="0"),
    # No foreign key: a task outlives the registration of its worker.
    Column("target_worker_id", String(ID_LENGTH), nullable=False),
    Column("status", String(STATUS_LENGTH), nullable=False, server_default="queued"),
    Column("message", Text, nullable=False, server_default=""),
    Column("submitted_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("time_limit", Float, nullable=False, server_default="0"),  # seconds; 0: none
    Column("max_retries", Integer, nullable=False, server_default="0"),
    Column("attempt", Integer, nullable=False, server_default="1"),  # the current one
    # Placed by the master (any worker): a retry may go to another worker.
    Column("any_worker", Boolean, nullable=False, server_default=false()),
    # Queued again after a failed or lost attempt: when the next attempt is due. Cleared
    # (committed) before that attempt is handed to a worker: while it is set, no worker
    # has it, so a restarted master hands it over instead of waiting for a report.
    Column("retry_at", UTCDateTime, nullable=True),
    CheckConstraint(f"status IN ({_in(TASK_STATUSES)})", name="status"),
    Index("ix_tasks_status", "status"),
    Index("ix_tasks_target_worker_id", "target_worker_id"),
    Index("ix_tasks_submitted_at", "submitted_at"),
)

assignments = Table(
    "assignments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "task_id",
        String(ID_LENGTH),
        ForeignKey("tasks.task_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("worker_id", String(ID_LENGTH), nullable=False),
    Column("assigned_at", UTCDateTime, nullable=False),
    Column("acknowledged", Boolean, nullable=False, server_default=false()),
    Column("message", Text, nullable=False, server_default=""),
    Index("ix_assignments_task_id", "task_id"),
)

results = Table(
    "results",
    metadata,
    Column(
        "task_id",
        String(ID_LENGTH),
        ForeignKey("tasks.task_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("worker_id", String(ID_LENGTH), nullable=False),
    Column("status", String(STATUS_LENGTH), nullable=False),
    Column("logs", Text, nullable=False, server_default=""),
    Column("logs_truncated", Boolean, nullable=False, server_default=false()),
    Column("exit_code", Integer, nullable=True),
    Column("result_location", Text, nullable=False, server_default=""),
    Column("received_at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("attempt", Integer, nullable=False, server_default="1"),
    CheckConstraint(f"status IN ({_in(RESULT_STATUSES)})", name="status"),
)

task_attempts = Table(
    "task_attempts",
    metadata,
    Column(
        "task_id",
        String(ID_LENGTH),
        ForeignKey("tasks.task_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("attempt", Integer, primary_key=True),
    Column("worker_id", String(ID_LENGTH), nullable=False),
    Column("status", String(STATUS_LENGTH), nullable=False),
    Column("message", Text, nullable=False, server_default=""),
    Column("exit_code", Integer, nullable=True),
    Column("logs", Text, nullable=False, server_default=""),
    Column("logs_truncated", Boolean, nullable=False, server_default=false()),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=False),
    CheckConstraint(f"status IN ({_in(TERMINAL_TASK_STATUSES)})", name="status"),
)

join_tokens = Table(
    "join_tokens",
    metadata,
    Column("token_id", String(TOKEN_ID_LENGTH), primary_key=True),
    Column("secret_hash", String(FINGERPRINT_LENGTH), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),  # None: never expires
    Column("max_uses", Integer, nullable=True),  # None: any number of joins
    Column("uses", Integer, nullable=False, server_default="0"),
    Column("worker_id", String(ID_LENGTH), nullable=True),  # None: any worker id
    Column("description", Text, nullable=False, server_default=""),
    Column("revoked_at", UTCDateTime, nullable=True),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(TOKEN_ID_LENGTH), primary_key=True),
    Column("secret_hash", String(FINGERPRINT_LENGTH), nullable=False),
    Column("scope", String(SCOPE_LENGTH), nullable=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),  # None: never expires
    Column("revoked_at", UTCDateTime, nullable=True),
    CheckConstraint(f"scope IN ({_in(frozenset(Scope))})", name="scope"),
)

# Alerts (migration 0005): rules made through the API, silences, and the history of
# transitions to firing and resolved.
alert_rules = Table(
    "alert_rules",
    metadata,
    Column("name", String(ID_LENGTH), primary_key=True),
    Column("spec", Text, nullable=False),  # the rule, JSON
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", Text, nullable=False, server_default=""),
)

silences = Table(
    "silences",
    metadata,
    Column("silence_id", String(TOKEN_ID_LENGTH), primary_key=True),
    Column("matchers", Text, nullable=False),  # JSON list of {name, op, value}
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", Text, nullable=False, server_default=""),
    Column("comment", Text, nullable=False, server_default=""),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(ID_LENGTH), nullable=False),
    Column("worker_id", String(ID_LENGTH), nullable=False),
    Column("state", String(STATUS_LENGTH), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("severity", String(STATUS_LENGTH), nullable=False, server_default=""),
    Column("value", Float, nullable=True),
    Column("labels", Text, nullable=False, server_default="{}"),
    Column("silenced", Boolean, nullable=False, server_default=false()),
    Column("reason", Text, nullable=False, server_default=""),
    CheckConstraint("state IN ('firing', 'resolved')", name="state"),
    Index("ix_alert_events_rule", "rule"),
    Index("ix_alert_events_worker_id", "worker_id"),
)

# Telemetry history (migration 0006, docs/HISTORY.md): wide rows, one per worker per
# heartbeat (tier 0) or per minute / hour bucket (tiers 1 and 2: the average under the
# metric's name, then _min and _max, and how many heartbeats the bucket holds). Times
# are Unix seconds (double precision): the API's unit, cheap to bucket in SQL.
HISTORY_METRICS: tuple[str, ...] = (
    "cpu_usage",
    "memory_usage",
    "storage_usage",
    "gpu_usage",
    "running_tasks",
    "memory_used_bytes",
    "storage_used_bytes",
    "gpu_memory_used_bytes",
    "net_rx_bytes_per_sec",
    "net_tx_bytes_per_sec",
    "disk_read_bytes_per_sec",
    "disk_write_bytes_per_sec",
    "load_avg_1m",
    "load_avg_5m",
    "load_avg_15m",
)


def _history_table(name: str, aggregated: bool) -> Table:
    columns: list[Any] = [
        Column("worker_id", String(ID_LENGTH), primary_key=True),
        Column("t", Float, primary_key=True),
    ]
    if aggregated:
        columns.append(Column("samples", Integer, nullable=False))
    for metric in HISTORY_METRICS:
        columns.append(Column(metric, Float, nullable=True))
        if aggregated:
            columns.append(Column(f"{metric}_min", Float, nullable=True))
            columns.append(Column(f"{metric}_max", Float, nullable=True))
    return Table(name, metadata, *columns, Index(f"ix_{name}_t", "t"))


history_raw = _history_table("history_raw", aggregated=False)
history_minute = _history_table("history_minute", aggregated=True)
history_hour = _history_table("history_hour", aggregated=True)
HISTORY_TABLES: tuple[Table, Table, Table] = (history_raw, history_minute, history_hour)
"""Tier 0, 1 and 2."""
