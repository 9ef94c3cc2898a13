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
