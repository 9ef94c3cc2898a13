"""Task time limits and retries: each finished attempt is kept; "timed_out" tasks;
results say why a task failed and which attempt they are for; workers say how they
hold process tasks to their requests.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "'assigned', 'cancelled', 'failure', 'lost', 'queued', 'rejected', 'running', 'success'"
_AFTER = (
    "'assigned', 'cancelled', 'failure', 'lost', 'queued', 'rejected', 'running', "
    "'success', 'timed_out'"
)
_FINISHED = "'cancelled', 'failure', 'lost', 'rejected', 'success', 'timed_out'"


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint(op.f("ck_tasks_status"), type_="check")
        batch.create_check_constraint(op.f("ck_tasks_status"), f"status IN ({_AFTER})")
        batch.add_column(sa.Column("time_limit", sa.Float(), server_default="0", nullable=False))
        batch.add_column(sa.Column("max_retries", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), server_default="", nullable=False))
        batch.add_column(sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("task_limits", sa.String(16), server_default="", nullable=False))
    op.create_table(
        "task_attempts",
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("logs", sa.Text(), server_default="", nullable=False),
        sa.Column("logs_truncated", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"status IN ({_FINISHED})", name=op.f("ck_task_attempts_status")),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.task_id"],
            name=op.f("fk_task_attempts_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "attempt", name=op.f("pk_task_attempts")),
    )


def downgrade() -> None:
    op.drop_table("task_attempts")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("task_limits")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("attempt")
        batch.drop_column("reason")
    op.execute("UPDATE tasks SET status = 'failure' WHERE status = 'timed_out'")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("attempt")
        batch.drop_column("max_retries")
        batch.drop_column("time_limit")
        batch.drop_constraint(op.f("ck_tasks_status"), type_="check")
        batch.create_check_constraint(op.f("ck_tasks_status"), f"status IN ({_BEFORE})")
