"""The ``Store`` interface and its errors. Back ends implement ``Store``.

Methods are synchronous and safe to call from several threads at once; asyncio
callers run them with ``asyncio.to_thread``. Every method is one transaction, unless
called inside ``transaction()`` (or through ``apply``): then the calls made in that
thread are one transaction together, committed at the end of the block.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

from cloudai.security.tokens import ApiTokenRecord, JoinTokenRecord
from cloudai.store.models import (
    AlertEventRecord,
    AlertRuleRecord,
    AssignmentRecord,
    AttemptRecord,
    ResultRecord,
    SilenceRecord,
    TaskRecord,
    WorkerRecord,
)


class Keep(enum.Enum):
    """Leave a field as it is, where None is a value to write."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


class StoreError(Exception):
    """The store could not do what was asked (database unreachable, schema too new...)."""


class NotFoundError(StoreError, LookupError):
    """A record the operation refers to does not exist (e.g. the task of a result)."""


class DuplicateError(StoreError):
    """A record with the same key exists already."""


StoreOperation = Callable[["Store"], object]
"""One operation of a batch: called with the store, inside the batch's transaction."""


class Store(ABC):
    """Persistent registry of workers, tasks, assignments and results."""

    # -- transactions ----------------------------------------------------------

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """A block whose store calls, made in this thread, are ONE transaction.

        Committed when the block ends; rolled back, wholly, if it raises (the exception
        propagates). A ``transaction()`` inside another joins the outer one.
        """

    def apply(self, operations: Sequence[StoreOperation]) -> list[object]:
        """Run ``operation(self)`` for each, in order, as ONE transaction; their results.

        All or nothing: if one raises, none of them is stored and the exception
        propagates (the master's group commit then retries them one by one, so that
        each caller gets the outcome of its own operation).
        """
        with self.transaction():
            return [operation(self) for operation in operations]

    @property
    @abstractmethod
    def backend(self) -> str:
        """The back end's name: ``"sqlite"`` or ``"postgresql"``."""

    @property
    @abstractmethod
    def url(self) -> str:
        """The database URL, password hidden: fit for logs and status output."""

    # -- workers ---------------------------------------------------------------

    @abstractmethod
    def upsert_worker(self, record: WorkerRecord) -> None:
        """Insert the worker, or update an existing one with the same id.

        On update ``registered_at`` keeps its stored value and a ``last_heartbeat``
        of None keeps the stored heartbeat.
        """

    def upsert_workers(self, records: Sequence[WorkerRecord]) -> None:
        """``upsert_worker`` for each record, in order; a store may do it in one
        transaction (the master batches registrations that arrive together)."""
        for record in records:
            self.upsert_worker(record)

    @abstractmethod
    def delete_worker(self, worker_id: str) -> bool:
        """Remove the worker; True if it existed. Its tasks and results stay."""

    @abstractmethod
    def get_worker(self, worker_id: str) -> WorkerRecord | None: ...

    @abstractmethod
    def list_workers(self) -> list[WorkerRecord]:
        """All workers, ordered by id."""

    @abstractmethod
    def set_worker_active(self, worker_id: str, active: bool) -> bool:
        """Set the active flag (and ``updated_at``); True if the worker exists."""

    @abstractmethod
    def record_heartbeats(self, beats: Mapping[str, datetime]) -> None:
        """Batch: for each worker id, set ``last_heartbeat`` and mark it active.

        One transaction. Unknown worker ids are ignored; a time older than the
        stored one does not move ``last_heartbeat`` back.
        """

    # -- tasks -----------------------------------------------------------------

    @abstractmethod
    def add_task(self, record: TaskRecord) -> None:
        """Insert a new task; ``DuplicateError`` if the id is taken."""

    @abstractmethod
    def update_task(
        self,
        task_id: str,
        *,
        status: str | None = None,
        message: str | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        attempt: int | None = None,
        new_attempt: bool = False,
        target_worker_id: str | None = None,
        retry_at: datetime | Keep | None = KEEP,
    ) -> bool:
        """Change the given fields (None: leave as is); True if the task exists.

        ``new_attempt``: the task runs again, so its start and finish times are cleared
        (before ``started_at``/``finished_at`` are applied); ``target_worker_id``: the
        task moves to that worker (an "any worker" task's next attempt); ``retry_at``:
        when its next attempt is due while it waits for it (None: it waits for none;
        ``KEEP``: leave as is)."""

    @abstractmethod
    def get_task(self, task_id: str) -> TaskRecord | None: ...

    @abstractmethod
    def list_tasks(
        self,
        status: str | Iterable[str] | None = None,
        worker_id: str | None = None,
        limit: int | None = 1000,
    ) -> list[TaskRecord]:
        """Tasks, newest submitted first, filtered by status(es) and target worker.

        ``limit=None``: all of them.
        """

    @abstractmethod
    def count_tasks(self) -> dict[str, int]:
        """Number of tasks per status (statuses without tasks are left out)."""

    # -- assignments -------------------------------------------------------------

    @abstractmethod
    def add_assignment(self, record: AssignmentRecord) -> int:
        """Insert an assignment; returns its id. ``NotFoundError`` if the task is unknown."""

    @abstractmethod
    def list_assignments(self, task_id: str) -> list[AssignmentRecord]:
        """The task's assignments, oldest first."""

    # -- results -----------------------------------------------------------------

    @abstractmethod
    def save_result(self, record: ResultRecord) -> bool:
        """Store the task's result. Idempotent: the first delivery wins.

        Returns True if stored, False if the task had a result already (a
        duplicate delivery: nothing is changed, nothing fails).
        ``NotFoundError`` if the task is unknown. Does not change the task's
        status: the caller does that with ``update_task``.
        """

    @abstractmethod
    def get_result(self, task_id: str) -> ResultRecord | None: ...

    # -- attempts (finished runs of retried tasks) -------------------------------------

    @abstractmethod
    def add_attempt(self, record: AttemptRecord) -> bool:
        """Store a finished attempt. Idempotent: True if stored, False if that attempt
        of the task is stored already. ``NotFoundError`` if the task is unknown."""

    @abstractmethod
    def list_attempts(self, task_id: str | None = None) -> list[AttemptRecord]:
        """Finished attempts of ``task_id`` (None: of every task), by task, oldest first."""

    # -- join tokens ---------------------------------------------------------------

    @abstractmethod
    def add_join_token(self, record: JoinTokenRecord) -> None:
        """Insert a new join token; ``DuplicateError`` if the id is taken."""

    @abstractmethod
    def get_join_token(self, token_id: str) -> JoinTokenRecord | None: ...

    @abstractmethod
    def list_join_tokens(self) -> list[JoinTokenRecord]:
        """All join tokens, revoked, expired and used-up ones too, oldest first."""

    @abstractmethod
    def use_join_token(
        self, token_id: str, now: datetime, worker_id: str | None = None
    ) -> JoinTokenRecord:
        """Count one use of the token, if it is still valid at ``now``; the updated record.

        Atomic: one ``UPDATE`` whose ``WHERE`` holds every condition (not revoked, not
        expired, uses below ``max_uses``, bound to ``worker_id`` or to no worker; a
        ``worker_id`` of None skips that last check), so concurrent joins, on one master
        or several, never use a token more than ``max_uses`` times. Otherwise
        ``JoinRefused`` says why (``reason`` "unknown" for an id the store lacks).
        """

    @abstractmethod
    def revoke_join_token(self, token_id: str, now: datetime) -> JoinTokenRecord:
        """Mark the token revoked at ``now`` (a revoked one keeps its first time); the
        updated record. ``NotFoundError`` if the id is unknown."""

    # -- API tokens ----------------------------------------------------------------

    @abstractmethod
    def add_api_token(self, record: ApiTokenRecord) -> None:
        """Insert a new API token; ``DuplicateError`` if the id is taken."""

    @abstractmethod
    def list_api_tokens(self) -> list[ApiTokenRecord]:
        """All API tokens, revoked and expired ones too, oldest first."""

    @abstractmethod
    def revoke_api_token(self, token_id: str, now: datetime) -> ApiTokenRecord:
        """Mark the token revoked at ``now`` (a revoked one keeps its first time); the
        updated record. ``NotFoundError`` if the id is unknown."""

    # -- alerts (rules made through the API, silences, history) -----------------------

    @abstractmethod
    def add_alert_rule(self, record: AlertRuleRecord) -> None:
        """Insert a rule; ``DuplicateError`` if a rule has that name."""

    @abstractmethod
    def list_alert_rules(self) -> list[AlertRuleRecord]:
        """Every stored rule, oldest first."""

    @abstractmethod
    def delete_alert_rule(self, name: str) -> bool:
        """Remove the rule; True if it existed."""

    @abstractmethod
    def add_silence(self, record: SilenceRecord) -> None:
        """Insert a silence; ``DuplicateError`` if the id is taken."""

    @abstractmethod
    def list_silences(self) -> list[SilenceRecord]:
        """Every stored silence, oldest first."""

    @abstractmethod
    def delete_silence(self, silence_id: str) -> bool:
        """Remove the silence; True if it existed."""

    @abstractmethod
    def add_alert_events(self, records: Sequence[AlertEventRecord]) -> None:
        """Append transitions to the history (one transaction); ids set on the records."""

    @abstractmethod
    def list_alert_events(
        self,
        rule: str | None = None,
        worker_id: str | None = None,
        limit: int = 100,
    ) -> list[AlertEventRecord]:
        """The history, newest first, filtered by rule and worker."""

    @abstractmethod
    def prune_alert_events(self, keep: int) -> int:
        """Delete all but the newest ``keep`` events; how many were deleted."""

    # -- telemetry history (tiers 0-2, docs/HISTORY.md) -------------------------------

    @abstractmethod
    def write_history(
        self,
        raw: Sequence[Mapping[str, Any] | Sequence[Any]],
        minutes: Sequence[Mapping[str, Any] | Sequence[Any]] = (),
        hours: Sequence[Mapping[str, Any] | Sequence[Any]] = (),
    ) -> None:
        """Tier 0 rows (a duplicate (worker_id, t) is ignored) and tier 1 and 2 buckets
        (a bucket already stored is replaced), in one transaction. A row is a tuple of
        every column in the table's order, or a mapping of column names."""

    @abstractmethod
    def prune_history(self, cutoffs: Sequence[float]) -> int:
        """Delete each tier's rows older than its cutoff (Unix seconds); how many."""

    @abstractmethod
    def recover_history(
        self, minute_start: float, hour_start: float
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What is stored of the open minute (from tier 0) and the open hour (from tier
        1, before ``minute_start``), one tier-1-shaped row per worker each."""

    @abstractmethod
    def query_history(
        self,
        tier: int,
        worker_id: str | None,
        metrics: Sequence[str],
        start: float,
        end: float,
        step: float,
    ) -> list[tuple[Any, ...]]:
        """A tier's rows in ``[start, end)`` in buckets of ``step`` seconds:
        ``(k, workers, avg, min, max, ...)`` per bucket with data (``worker_id`` None:
        across workers)."""

    # -- lifecycle ---------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release the connections. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
