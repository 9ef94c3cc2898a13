"""``SqlStore``: the ``Store`` on SQLAlchemy Core, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from cloudai.security.tokens import (
    ApiTokenRecord,
    JoinTokenRecord,
    check_join,
    unknown_join_token,
)
from cloudai.store import schema
from cloudai.store.base import KEEP, DuplicateError, Keep, NotFoundError, Store, StoreError
from cloudai.store.engine import WRITE_OPTION, make_engine
from cloudai.store.migrate import upgrade
from cloudai.store.models import (
    RESULT_STATUSES,
    TASK_STATUSES,
    TERMINAL_TASK_STATUSES,
    AssignmentRecord,
    AttemptRecord,
    ResultRecord,
    TaskRecord,
    WorkerRecord,
    utcnow,
)
from cloudai.store.sql_alerts import SqlAlerts
from cloudai.store.sql_history import SqlHistory
from cloudai.store.urls import display_url

log = logging.getLogger(__name__)

_W = schema.workers
_T = schema.tasks
_A = schema.assignments
_R = schema.results
_AT = schema.task_attempts
_J = schema.join_tokens
_K = schema.api_tokens

# Heartbeat times of many workers in one statement; a time only ever moves forward, and a
# worker heard from is active. SQLite: a JSON object {worker_id: UTC text}.
_SQLITE_HEARTBEATS = (
    f"UPDATE {_W.name} SET is_active = TRUE, last_heartbeat = CASE"
    " WHEN last_heartbeat IS NULL OR last_heartbeat < beat.value THEN beat.value"
    " ELSE last_heartbeat END"
    f" FROM json_each(?) AS beat WHERE {_W.name}.worker_id = beat.key"
)


def _sqlite_time(when: datetime) -> str:
    """The text UTCDateTime binds on SQLite (SQLAlchemy's DATETIME, in UTC), 1.7 us
    rather than 2.8 for a time in UTC already."""
    if when.tzinfo is not UTC:
        when = schema.to_utc(when)
    return when.isoformat(" ", "microseconds")[:26]


# PostgreSQL: two arrays, the ids and their times (GREATEST ignores NULL).
_POSTGRES_HEARTBEATS = (
    f"UPDATE {_W.name} SET is_active = TRUE,"
    f" last_heartbeat = GREATEST({_W.name}.last_heartbeat, beat.t)"
    " FROM unnest(%s::text[], %s::timestamptz[]) AS beat(id, t)"
    f" WHERE {_W.name}.worker_id = beat.id"
)


class SqlStore(SqlAlerts, SqlHistory, Store):
    """The store on a SQLAlchemy engine. ``migrate=True`` upgrades the schema to head."""

    def __init__(self, url: URL, *, migrate: bool = True) -> None:
        self._url = url
        self._engine = make_engine(url)
        # preserve_rowcount: rowcount of INSERT ... ON CONFLICT DO NOTHING (0 on conflict).
        self._writer = self._engine.execution_options(
            **{WRITE_OPTION: True}, preserve_rowcount=True
        )
        self._closed = False
        self._close_lock = threading.Lock()
        self._local = threading.local()  # .conn: this thread's open transaction()
        # The task path's statements, built once and executed with parameters: SQLAlchemy
        # then reuses their compiled form (a statement built per call with literal
        # .values() cost ~0.5 ms of Python each, more than a group commit's fsync share).
        self._task_insert = self._insert(_T).on_conflict_do_nothing(index_elements=[_T.c.task_id])
        self._task_update = update(_T).where(_T.c.task_id == bindparam("key_task_id"))
        self._assignment_insert = insert(_A)
        self._result_insert = self._insert(_R).on_conflict_do_nothing(index_elements=[_R.c.task_id])
        self._attempt_insert = self._insert(_AT).on_conflict_do_nothing(
            index_elements=[_AT.c.task_id, _AT.c.attempt]
        )
        self.schema_revision: str | None = None
        if migrate:
            try:
                self.schema_revision = upgrade(self._engine)
            except SQLAlchemyError as exc:
                self._engine.dispose()
                detail = getattr(exc, "orig", None) or exc
                raise StoreError(f"cannot open the database {self.url}: {detail}") from exc
            except BaseException:
                self._engine.dispose()
                raise

    @property
    def backend(self) -> str:
        return self._engine.dialect.name

    @property
    def url(self) -> str:
        return display_url(self._url)

    @property
    def engine(self) -> Engine:
        return self._engine

    # -- plumbing ----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The calls this thread makes in the block share one (writing) transaction."""
        if self._current() is not None:
            yield  # joins the outer transaction
            return
        self._check_open()
        with _errors(), self._writer.begin() as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def _current(self) -> Connection | None:
        conn: Connection | None = getattr(self._local, "conn", None)
        return conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        current = self._current()
        if current is not None:  # inside transaction(): read what it wrote
            yield current
            return
        self._check_open()
        with _errors(), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        current = self._current()
        if current is not None:  # inside transaction(): committed when it ends
            yield current
            return
        self._check_open()
        with _errors(), self._writer.begin() as conn:
            yield conn

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """INSERT with the dialect's ON CONFLICT support."""
        if self.backend == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # -- workers -----------------------------------------------------------------

    def upsert_worker(self, record: WorkerRecord) -> None:
        self.upsert_workers([record])

    def upsert_workers(self, records: Sequence[WorkerRecord]) -> None:
        latest = {r.worker_id: r for r in records}  # one row per worker, the last wins
        if not latest:
            return
        stmt = self._insert(_W)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[_W.c.worker_id],
            set_={
                "address": excluded.address,
                "total_cpu": excluded.total_cpu,
                "total_memory": excluded.total_memory,
                "total_storage": excluded.total_storage,
                "total_gpu": excluded.total_gpu,
                "is_active": excluded.is_active,
                "last_heartbeat": func.coalesce(excluded.last_heartbeat, _W.c.last_heartbeat),
                "updated_at": excluded.updated_at,
                "cert_fingerprint": excluded.cert_fingerprint,
            },
        )
        with self._write() as conn:  # one transaction, one executemany
            conn.execute(stmt, [asdict(record) for record in latest.values()])

    def delete_worker(self, worker_id: str) -> bool:
        with self._write() as conn:
            return conn.execute(delete(_W).where(_W.c.worker_id == worker_id)).rowcount > 0

    def get_worker(self, worker_id: str) -> WorkerRecord | None:
        with self._read() as conn:
            row = conn.execute(select(_W).where(_W.c.worker_id == worker_id)).first()
        return None if row is None else WorkerRecord(**row._asdict())

    def list_workers(self) -> list[WorkerRecord]:
        with self._read() as conn:
            rows = conn.execute(select(_W).order_by(_W.c.worker_id)).all()
        return [WorkerRecord(**row._asdict()) for row in rows]

    def set_worker_active(self, worker_id: str, active: bool) -> bool:
        stmt = (
            update(_W)
            .where(_W.c.worker_id == worker_id)
            .values(is_active=active, updated_at=utcnow())
        )
        with self._write() as conn:
            return conn.execute(stmt).rowcount > 0

    def record_heartbeats(self, beats: Mapping[str, datetime]) -> None:
        if not beats:
            return
        # The hot batch of the store (every worker, every flush): one statement whatever
        # the number of workers, its rows passed as one JSON text (SQLite) or two arrays
        # (PostgreSQL), so that the database does the per-row work without the GIL and the
        # event loop does not wait on this thread (docs/PERFORMANCE.md).
        ids = sorted(beats)  # one lock order for every writer (PostgreSQL)
        with self._write() as conn:
            if self._engine.dialect.name == "sqlite":
                when = {worker_id: _sqlite_time(beats[worker_id]) for worker_id in ids}
                conn.exec_driver_sql(_SQLITE_HEARTBEATS, (orjson.dumps(when).decode(),))
            else:
                times = [schema.to_utc(beats[worker_id]) for worker_id in ids]
                conn.exec_driver_sql(_POSTGRES_HEARTBEATS, (ids, times))

    # -- tasks -------------------------------------------------------------------

    def add_task(self, record: TaskRecord) -> None:
        _check_status(record.status, TASK_STATUSES, "task")
        with self._write() as conn:
            if conn.execute(self._task_insert, _values(record)).rowcount == 0:
                raise DuplicateError(f"task {record.task_id!r} exists already")

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
        values: dict[str, Any] = {}
        if retry_at is not KEEP:
            values["retry_at"] = retry_at
        if new_attempt:
            values["started_at"] = values["finished_at"] = None
        if attempt is not None:
            values["attempt"] = attempt
        if target_worker_id is not None:
            values["target_worker_id"] = target_worker_id
        if status is not None:
            _check_status(status, TASK_STATUSES, "task")
            values["status"] = status
        if message is not None:
            values["message"] = message
        if started_at is not None:
            values["started_at"] = started_at
        if finished_at is not None:
            values["finished_at"] = finished_at
        if not values:
            return self.get_task(task_id) is not None
        values["key_task_id"] = task_id  # the SET clause is the other keys
        with self._write() as conn:
            return conn.execute(self._task_update, values).rowcount > 0

    def get_task(self, task_id: str) -> TaskRecord | None:
        with self._read() as conn:
            row = conn.execute(select(_T).where(_T.c.task_id == task_id)).first()
        return None if row is None else TaskRecord(**row._asdict())

    def list_tasks(
        self,
        status: str | Iterable[str] | None = None,
        worker_id: str | None = None,
        limit: int | None = 1000,
    ) -> list[TaskRecord]:
        stmt = select(_T).order_by(_T.c.submitted_at.desc(), _T.c.task_id.desc())
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            stmt = stmt.where(_T.c.status.in_(statuses))
        if worker_id is not None:
            stmt = stmt.where(_T.c.target_worker_id == worker_id)
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            stmt = stmt.limit(limit)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [TaskRecord(**row._asdict()) for row in rows]

    def count_tasks(self) -> dict[str, int]:
        stmt = select(_T.c.status, func.count()).group_by(_T.c.status)
        with self._read() as conn:
            return {status: count for status, count in conn.execute(stmt).all()}

    # -- assignments ---------------------------------------------------------------

    def add_assignment(self, record: AssignmentRecord) -> int:
        """Insert; returns the new id, also set on ``record.id``."""
        values = _values(record)
        values.pop("id")
        try:
            with self._write() as conn:
                key = conn.execute(self._assignment_insert, values).inserted_primary_key
                assert key is not None  # a single-row INSERT always reports its key
                new_id = int(key[0])
        except IntegrityError:
            raise NotFoundError(f"no task {record.task_id!r} to assign") from None
        record.id = new_id
        return new_id

    def list_assignments(self, task_id: str) -> list[AssignmentRecord]:
        stmt = select(_A).where(_A.c.task_id == task_id).order_by(_A.c.id)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [AssignmentRecord(**row._asdict()) for row in rows]

    # -- results -------------------------------------------------------------------

    def save_result(self, record: ResultRecord) -> bool:
        _check_status(record.status, RESULT_STATUSES, "result")
        try:
            with self._write() as conn:
                return conn.execute(self._result_insert, _values(record)).rowcount > 0
        except IntegrityError:
            # ON CONFLICT covers the primary key; what is left is the task's foreign key.
            raise NotFoundError(f"no task {record.task_id!r} for this result") from None

    def get_result(self, task_id: str) -> ResultRecord | None:
        with self._read() as conn:
            row = conn.execute(select(_R).where(_R.c.task_id == task_id)).first()
        return None if row is None else ResultRecord(**row._asdict())

    # -- attempts --------------------------------------------------------------------

    def add_attempt(self, record: AttemptRecord) -> bool:
        _check_status(record.status, TERMINAL_TASK_STATUSES, "attempt")
        try:
            with self._write() as conn:
                return conn.execute(self._attempt_insert, _values(record)).rowcount > 0
        except IntegrityError:
            raise NotFoundError(f"no task {record.task_id!r} for this attempt") from None

    def list_attempts(self, task_id: str | None = None) -> list[AttemptRecord]:
        stmt = select(_AT).order_by(_AT.c.task_id, _AT.c.attempt)
        if task_id is not None:
            stmt = stmt.where(_AT.c.task_id == task_id)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [AttemptRecord(**row._asdict()) for row in rows]

    # -- join tokens -----------------------------------------------------------------

    def add_join_token(self, record: JoinTokenRecord) -> None:
        self._add_token(_J, asdict(record), record.token_id, "join token")

    def get_join_token(self, token_id: str) -> JoinTokenRecord | None:
        with self._read() as conn:
            row = conn.execute(select(_J).where(_J.c.token_id == token_id)).first()
        return None if row is None else JoinTokenRecord(**row._asdict())

    def list_join_tokens(self) -> list[JoinTokenRecord]:
        with self._read() as conn:
            rows = conn.execute(select(_J).order_by(_J.c.created_at, _J.c.token_id)).all()
        return [JoinTokenRecord(**row._asdict()) for row in rows]

    def use_join_token(
        self, token_id: str, now: datetime, worker_id: str | None = None
    ) -> JoinTokenRecord:
        schema.to_utc(now)  # a naive time is refused before anything is written
        conditions = [
            _J.c.token_id == token_id,
            _J.c.revoked_at.is_(None),
            or_(_J.c.expires_at.is_(None), _J.c.expires_at > now),
            or_(_J.c.max_uses.is_(None), _J.c.uses < _J.c.max_uses),
        ]
        if worker_id is not None:
            conditions.append(or_(_J.c.worker_id.is_(None), _J.c.worker_id == worker_id))
        # One statement: the database serialises concurrent updates of the row and
        # re-checks the WHERE on the row as the previous writer left it.
        stmt = update(_J).where(and_(*conditions)).values(uses=_J.c.uses + 1).returning(*_J.c)
        with self._write() as conn:
            row = conn.execute(stmt).first()
            if row is not None:
                return JoinTokenRecord(**row._asdict())
            current = conn.execute(select(_J).where(_J.c.token_id == token_id)).first()
        if current is None:
            raise unknown_join_token(token_id)
        record = JoinTokenRecord(**current._asdict())
        check_join(record, worker_id if worker_id is not None else record.worker_id or "", now)
        # The WHERE and check_join are complements: not reached unless the row changed
        # between the two statements in a way no store method changes it.
        raise StoreError(f"join token {token_id} changed while it was being used; try again")

    def revoke_join_token(self, token_id: str, now: datetime) -> JoinTokenRecord:
        record = self._revoke(_J, token_id, now, "join token")
        return JoinTokenRecord(**record)

    # -- API tokens ------------------------------------------------------------------

    def add_api_token(self, record: ApiTokenRecord) -> None:
        values = asdict(record)
        values["scope"] = record.scope.value
        self._add_token(_K, values, record.token_id, "API token")

    def list_api_tokens(self) -> list[ApiTokenRecord]:
        with self._read() as conn:
            rows = conn.execute(select(_K).order_by(_K.c.created_at, _K.c.token_id)).all()
        return [ApiTokenRecord(**row._asdict()) for row in rows]

    def revoke_api_token(self, token_id: str, now: datetime) -> ApiTokenRecord:
        return ApiTokenRecord(**self._revoke(_K, token_id, now, "API token"))

    def _add_token(self, table: Table, values: dict[str, Any], token_id: str, what: str) -> None:
        stmt = (
            self._insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[table.c.token_id])
        )
        with self._write() as conn:
            if conn.execute(stmt).rowcount == 0:
                raise DuplicateError(f"{what} {token_id!r} exists already")

    def _revoke(self, table: Table, token_id: str, now: datetime, what: str) -> dict[str, Any]:
        stmt = (
            update(table)
            .where(table.c.token_id == token_id)
            .values(
                revoked_at=func.coalesce(table.c.revoked_at, literal(now, schema.UTCDateTime()))
            )
            .returning(*table.c)
        )
        with self._write() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise NotFoundError(f"no {what} {token_id!r}")
        return row._asdict()

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._engine.dispose()


_FIELDS: dict[type, tuple[str, ...]] = {}


def _values(record: Any) -> dict[str, Any]:
    """A flat record's fields as a dict (``asdict`` without its deep copy)."""
    names = _FIELDS.get(type(record))
    if names is None:
        names = _FIELDS[type(record)] = tuple(f.name for f in fields(record))
    return {name: getattr(record, name) for name in names}


def _check_status(status: str, allowed: frozenset[str], what: str) -> None:
    if status not in allowed:
        raise ValueError(f"invalid {what} status {status!r}: expected one of {sorted(allowed)}")


@contextmanager
def _errors() -> Iterator[None]:
    """Database failures other than constraint violations surface as ``StoreError``."""
    try:
        yield
    except IntegrityError:
        raise
    except StatementError as exc:
        # A bad value refused before reaching the database (e.g. a naive datetime).
        if not isinstance(exc, DBAPIError) and isinstance(exc.orig, ValueError | TypeError):
            raise exc.orig from None
        raise StoreError(f"database error: {exc.orig or exc}") from exc
    except SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        raise StoreError(f"database error: {detail}") from exc
