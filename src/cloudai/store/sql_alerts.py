"""The alert tables of ``SqlStore`` (rules made through the API, silences, the history),
as a mixin: the same SQLAlchemy Core statements on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, delete, insert, select

from cloudai.store import schema
from cloudai.store.base import DuplicateError
from cloudai.store.models import AlertEventRecord, AlertRuleRecord, SilenceRecord

_RULES = schema.alert_rules
_SILENCES = schema.silences
_EVENTS = schema.alert_events


class SqlAlerts:
    """Alert rules, silences and history on the store's connections."""

    if TYPE_CHECKING:

        def _read(self) -> AbstractContextManager[Connection]: ...

        def _write(self) -> AbstractContextManager[Connection]: ...

        def _insert(self, table: Table) -> Any: ...

    def _add_keyed(self, table: Table, values: dict[str, Any], key: str, what: str) -> None:
        column = table.c[key]
        stmt = self._insert(table).values(**values).on_conflict_do_nothing(index_elements=[column])
        with self._write() as conn:
            if conn.execute(stmt).rowcount == 0:
                raise DuplicateError(f"{what} {values[key]!r} exists already")

    # rules

    def add_alert_rule(self, record: AlertRuleRecord) -> None:
        values = {
            "name": record.name,
            "spec": record.spec,
            "created_at": record.created_at,
            "created_by": record.created_by,
        }
        self._add_keyed(_RULES, values, "name", "alert rule")

    def list_alert_rules(self) -> list[AlertRuleRecord]:
        with self._read() as conn:
            rows = conn.execute(select(_RULES).order_by(_RULES.c.created_at, _RULES.c.name)).all()
        return [AlertRuleRecord(**row._asdict()) for row in rows]

    def delete_alert_rule(self, name: str) -> bool:
        with self._write() as conn:
            return conn.execute(delete(_RULES).where(_RULES.c.name == name)).rowcount > 0

    # silences

    def add_silence(self, record: SilenceRecord) -> None:
        values = {
            "silence_id": record.silence_id,
            "matchers": record.matchers,
            "starts_at": record.starts_at,
            "ends_at": record.ends_at,
            "created_at": record.created_at,
            "created_by": record.created_by,
            "comment": record.comment,
        }
        self._add_keyed(_SILENCES, values, "silence_id", "silence")

    def list_silences(self) -> list[SilenceRecord]:
        stmt = select(_SILENCES).order_by(_SILENCES.c.created_at, _SILENCES.c.silence_id)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [SilenceRecord(**row._asdict()) for row in rows]

    def delete_silence(self, silence_id: str) -> bool:
        stmt = delete(_SILENCES).where(_SILENCES.c.silence_id == silence_id)
        with self._write() as conn:
            return conn.execute(stmt).rowcount > 0

    # history

    def add_alert_events(self, records: Sequence[AlertEventRecord]) -> None:
        if not records:
            return
        with self._write() as conn:
            for record in records:
                values = {
                    "rule": record.rule,
                    "worker_id": record.worker_id,
                    "state": record.state,
                    "at": record.at,
                    "starts_at": record.starts_at,
                    "severity": record.severity,
                    "value": record.value,
                    "labels": record.labels,
                    "silenced": record.silenced,
                    "reason": record.reason,
                }
                key = conn.execute(insert(_EVENTS), values).inserted_primary_key
                if key is not None:
                    record.id = int(key[0])

    def list_alert_events(
        self,
        rule: str | None = None,
        worker_id: str | None = None,
        limit: int = 100,
    ) -> list[AlertEventRecord]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        stmt = select(_EVENTS).order_by(_EVENTS.c.id.desc()).limit(limit)
        if rule is not None:
            stmt = stmt.where(_EVENTS.c.rule == rule)
        if worker_id is not None:
            stmt = stmt.where(_EVENTS.c.worker_id == worker_id)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [AlertEventRecord(**row._asdict()) for row in rows]

    def prune_alert_events(self, keep: int) -> int:
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        with self._write() as conn:
            newest = conn.execute(
                select(_EVENTS.c.id).order_by(_EVENTS.c.id.desc()).offset(keep).limit(1)
            ).first()
            if newest is None:
                return 0
            return int(conn.execute(delete(_EVENTS).where(_EVENTS.c.id <= newest[0])).rowcount)
