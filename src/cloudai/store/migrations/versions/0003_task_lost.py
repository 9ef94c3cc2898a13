"""Tasks may be "lost": accepted, but no longer anywhere (never run, or vanished).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "'assigned', 'cancelled', 'failure', 'queued', 'rejected', 'running', 'success'"
_AFTER = "'assigned', 'cancelled', 'failure', 'lost', 'queued', 'rejected', 'running', 'success'"


def _status_check(statuses: str) -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint(op.f("ck_tasks_status"), type_="check")
        batch.create_check_constraint(op.f("ck_tasks_status"), f"status IN ({statuses})")


def upgrade() -> None:
    _status_check(_AFTER)


def downgrade() -> None:
    op.execute("UPDATE tasks SET status = 'failure' WHERE status = 'lost'")
    _status_check(_BEFORE)
