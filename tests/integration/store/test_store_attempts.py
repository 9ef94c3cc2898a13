"""Retried tasks in the store, the same on SQLite and PostgreSQL: the task's time limit,
retries and current attempt; each finished attempt kept once; a result says its reason
and attempt; a worker's task-limit enforcement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloudai.store import (
    AttemptRecord,
    NotFoundError,
    ResultRecord,
    Store,
    TaskRecord,
    WorkerRecord,
)

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


def test_a_task_keeps_its_limits_and_its_attempts(store: Store) -> None:
    store.add_task(
        TaskRecord("t1", "w1", command="false", time_limit=2.5, max_retries=2, submitted_at=T0)
    )
    store.update_task("t1", status="running", started_at=T0 + timedelta(seconds=1))
    first = AttemptRecord(
        "t1",
        1,
        "w1",
        "timed_out",
        finished_at=T0 + timedelta(seconds=4),
        message="timed out",
        exit_code=143,
        logs="tick\n",
        started_at=T0 + timedelta(seconds=1),
    )
    with store.transaction():
        assert store.update_task("t1", status="queued", attempt=2, new_attempt=True)
        assert store.add_attempt(first)
    assert not store.add_attempt(first)  # a replayed change stores it once
    task = store.get_task("t1")
    assert task is not None
    assert (task.time_limit, task.max_retries, task.attempt) == (2.5, 2, 2)
    assert task.status == "queued" and task.started_at is None and task.finished_at is None
    assert store.list_attempts("t1") == [first]
    assert store.list_attempts() == [first] and store.list_attempts("other") == []
    assert store.save_result(
        ResultRecord("t1", "w1", "failure", exit_code=1, reason="out of memory", attempt=2)
    )
    result = store.get_result("t1")
    assert result is not None and (result.reason, result.attempt) == ("out of memory", 2)


def test_an_attempt_needs_its_task_and_a_finished_status(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.add_attempt(AttemptRecord("nope", 1, "w1", "failure", finished_at=T0))
    store.add_task(TaskRecord("t1", "w1", command="x", submitted_at=T0))
    with pytest.raises(ValueError):
        store.add_attempt(AttemptRecord("t1", 1, "w1", "running", finished_at=T0))


def test_a_worker_says_how_it_holds_tasks_to_their_limits(store: Store) -> None:
    store.upsert_worker(WorkerRecord("w1", "127.0.0.1:1", task_limits="cgroup-v1"))
    worker = store.get_worker("w1")
    assert worker is not None and worker.task_limits == "cgroup-v1"


def test_a_task_waiting_for_its_next_attempt_says_when_it_is_due(store: Store) -> None:
    store.add_task(TaskRecord("t1", "w1", command="false", max_retries=1, submitted_at=T0))
    assert store.get_task("t1").retry_at is None  # type: ignore[union-attr]
    due = T0 + timedelta(seconds=2.5)
    with store.transaction():
        assert store.update_task("t1", status="queued", attempt=2, new_attempt=True, retry_at=due)
        store.add_attempt(AttemptRecord("t1", 1, "w1", "failure", finished_at=T0))
    task = store.get_task("t1")
    assert task is not None and task.retry_at == due and task.retry_at.tzinfo is not None
    assert [t.retry_at for t in store.list_tasks()] == [due]
    assert store.update_task("t1", message="other")  # left as it is unless given
    assert store.get_task("t1").retry_at == due  # type: ignore[union-attr]
    assert store.update_task("t1", retry_at=None)  # handed over: cleared
    assert store.get_task("t1").retry_at is None  # type: ignore[union-attr]
