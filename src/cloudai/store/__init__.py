"""Persistence for the master: worker registry, tasks, assignments and results.

Open with ``open_store(database_url, data_dir)``; see docs/STORE.md.
"""

# First: quiets Alembic's import-time log lines before anything imports Alembic.
from cloudai.store import _alembic_logs  # noqa: F401
from cloudai.store.base import DuplicateError, NotFoundError, Store, StoreError, StoreOperation
from cloudai.store.factory import open_store
from cloudai.store.group_commit import GroupCommit
from cloudai.store.models import (
    RESULT_STATUSES,
    TASK_STATUSES,
    TERMINAL_TASK_STATUSES,
    AlertEventRecord,
    AlertRuleRecord,
    AssignmentRecord,
    AttemptRecord,
    ResultRecord,
    SilenceRecord,
    TaskRecord,
    WorkerRecord,
    utcnow,
)
from cloudai.store.sql_store import SqlStore
from cloudai.store.write_behind import HeartbeatWriteBehind

__all__ = [
    "RESULT_STATUSES",
    "TASK_STATUSES",
    "TERMINAL_TASK_STATUSES",
    "AlertEventRecord",
    "AlertRuleRecord",
    "AssignmentRecord",
    "AttemptRecord",
    "DuplicateError",
    "GroupCommit",
    "HeartbeatWriteBehind",
    "NotFoundError",
    "ResultRecord",
    "SilenceRecord",
    "SqlStore",
    "Store",
    "StoreError",
    "StoreOperation",
    "TaskRecord",
    "WorkerRecord",
    "open_store",
    "utcnow",
]
