"""Alert rules, silences and the alert history in the store, the same on SQLite and
PostgreSQL (see conftest.py), and migration 0005 up and down."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import inspect

from cloudai.store import (
    AlertEventRecord,
    AlertRuleRecord,
    DuplicateError,
    SilenceRecord,
    SqlStore,
    Store,
)
from cloudai.store.migrate import alembic_config

T0 = datetime(2026, 12, 6, 12, 0, 0, 500000, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(rule: str, worker: str, state: str, second: float) -> AlertEventRecord:
    return AlertEventRecord(
        rule=rule,
        worker_id=worker,
        state=state,
        at=at(second),
        starts_at=at(0),
        severity="critical",
        value=95.5,
        labels='{"team": "infra"}',
        silenced=state == "resolved",
        reason="",
    )


def test_rules_survive_a_reopen(open_: Callable[[], Store]) -> None:
    store = open_()
    store.add_alert_rule(AlertRuleRecord("high-cpu", '{"name": "high-cpu"}', at(1), "ops"))
    store.add_alert_rule(AlertRuleRecord("mem", '{"name": "mem"}', at(2)))
    with pytest.raises(DuplicateError):
        store.add_alert_rule(AlertRuleRecord("mem", "{}", at(3)))
    store.close()
    again = open_()
    rules = again.list_alert_rules()
    assert [(r.name, r.created_by, r.created_at) for r in rules] == [
        ("high-cpu", "ops", at(1)),
        ("mem", "", at(2)),
    ]
    assert again.delete_alert_rule("mem") is True
    assert again.delete_alert_rule("mem") is False
    assert [r.name for r in again.list_alert_rules()] == ["high-cpu"]


def test_silences(store: Store) -> None:
    record = SilenceRecord(
        "a1b2c3d4e5f6",
        '[{"name": "alertname", "op": "=", "value": "x"}]',
        starts_at=at(0),
        ends_at=at(3600),
        created_at=at(0),
        created_by="me",
        comment="maintenance",
    )
    store.add_silence(record)
    with pytest.raises(DuplicateError):
        store.add_silence(record)
    (stored,) = store.list_silences()
    assert stored == record
    assert store.delete_silence("a1b2c3d4e5f6") is True
    assert store.list_silences() == []


def test_history_newest_first_filtered_and_pruned(store: Store) -> None:
    batch = [event("cpu", "w1", "firing", 1), event("cpu", "w2", "firing", 2)]
    store.add_alert_events(batch)
    assert all(record.id is not None for record in batch)
    store.add_alert_events([event("cpu", "w1", "resolved", 3), event("mem", "w1", "firing", 4)])
    history = store.list_alert_events()
    assert [(e.rule, e.worker_id, e.state) for e in history] == [
        ("mem", "w1", "firing"),
        ("cpu", "w1", "resolved"),
        ("cpu", "w2", "firing"),
        ("cpu", "w1", "firing"),
    ]
    assert history[1].silenced and history[1].value == 95.5 and history[1].at == at(3)
    assert [e.state for e in store.list_alert_events(rule="cpu", worker_id="w1")] == [
        "resolved",
        "firing",
    ]
    assert len(store.list_alert_events(limit=1)) == 1
    assert store.prune_alert_events(keep=2) == 2
    assert [e.rule for e in store.list_alert_events()] == ["mem", "cpu"]
    assert store.prune_alert_events(keep=10) == 0


def test_migration_0005_down_and_up(store: Store) -> None:
    assert isinstance(store, SqlStore)
    tables = {"alert_rules", "silences", "alert_events"}
    assert tables <= set(inspect(store.engine).get_table_names())
    with store.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0004")
    assert not tables & set(inspect(store.engine).get_table_names())
    with store.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert tables <= set(inspect(store.engine).get_table_names())
