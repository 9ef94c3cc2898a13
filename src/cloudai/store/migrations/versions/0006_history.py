"""Telemetry history: tier 0 (every heartbeat), tier 1 (per minute) and tier 2 (per
hour), one wide row per worker per sample or bucket.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A snapshot of the metrics at this revision (a migration does not import schema.py).
_METRICS = (
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
_TABLES = (("history_raw", False), ("history_minute", True), ("history_hour", True))


def upgrade() -> None:
    for name, aggregated in _TABLES:
        columns: list[sa.Column[Any]] = [
            sa.Column("worker_id", sa.String(128), nullable=False),
            sa.Column("t", sa.Float(), nullable=False),
        ]
        if aggregated:
            columns.append(sa.Column("samples", sa.Integer(), nullable=False))
        for metric in _METRICS:
            columns.append(sa.Column(metric, sa.Float(), nullable=True))
            if aggregated:
                columns.append(sa.Column(f"{metric}_min", sa.Float(), nullable=True))
                columns.append(sa.Column(f"{metric}_max", sa.Float(), nullable=True))
        op.create_table(
            name,
            *columns,
            sa.PrimaryKeyConstraint("worker_id", "t", name=op.f(f"pk_{name}")),
        )
        op.create_index(f"ix_{name}_t", name, ["t"])


def downgrade() -> None:
    for name, _aggregated in reversed(_TABLES):
        op.drop_index(f"ix_{name}_t", table_name=name)
        op.drop_table(name)
