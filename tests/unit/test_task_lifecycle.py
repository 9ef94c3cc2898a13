from __future__ import annotations

import pytest

from cloudai.task_lifecycle import (
    TRANSITIONS,
    InvalidTransition,
    LostTaskWatch,
    TaskEvent,
    can,
    next_status,
)
from cloudai.task_status import TERMINAL_STATUSES, TaskStatus

S, E = TaskStatus, TaskEvent


@pytest.mark.parametrize(
    ("path", "end"),
    [
        ([E.ASSIGNED, E.SEEN_RUNNING, E.SUCCEEDED], S.SUCCESS),
        ([E.ASSIGNED, E.SEEN_RUNNING, E.FAILED], S.FAILURE),
        ([E.ASSIGNED, E.CANCELLED], S.CANCELLED),
        ([E.REFUSED], S.REJECTED),
        ([E.EXPIRED], S.LOST),
        ([E.ASSIGNED, E.LOST], S.LOST),
        ([E.ASSIGNED, E.SEEN_RUNNING, E.LOST], S.LOST),
        ([E.SEEN_RUNNING, E.SUCCEEDED], S.SUCCESS),  # listed before the ack came back
        ([E.ASSIGNED, E.LOST, E.FAILED], S.FAILURE),  # a result always wins
        ([E.REFUSED, E.SUCCEEDED], S.SUCCESS),  # "unreachable", yet it ran
    ],
)
def test_paths(path: list[TaskEvent], end: TaskStatus) -> None:
    status = S.QUEUED
    for event in path:
        status = next_status(status, event)
    assert status is end


def test_finished_tasks_do_not_move_except_to_a_result() -> None:
    for status in TERMINAL_STATUSES:
        for event in (E.ASSIGNED, E.SEEN_RUNNING, E.LOST, E.EXPIRED, E.REFUSED):
            assert not can(status, event), (status, event)
    with pytest.raises(InvalidTransition, match="a success task cannot be lost"):
        next_status(S.SUCCESS, E.LOST)
    for (status, _event), target in TRANSITIONS.items():
        if status in (S.SUCCESS, S.FAILURE, S.CANCELLED):
            raise AssertionError(f"{status} -> {target}")


def test_a_task_never_seen_running_is_lost_after_the_deadline() -> None:
    watch = LostTaskWatch(start_deadline=10.0, vanish_grace=5.0)
    watch.assigned("t1", "w1", now=100.0)
    watch.heartbeat("w1", set(), now=105.0)
    assert watch.check(now=109.9) == []
    [(task_id, reason)] = watch.check(now=110.0)
    assert task_id == "t1" and "never listed it as running within 10 s" in reason
    assert "t1" not in watch


def test_a_running_task_that_vanishes_without_a_result_is_lost_after_the_grace() -> None:
    watch = LostTaskWatch(start_deadline=10.0, vanish_grace=5.0)
    watch.assigned("t1", "w1", now=0.0)
    watch.assigned("t2", "w2", now=0.0)
    watch.heartbeat("w1", {"t1"}, now=1.0)
    watch.heartbeat("w2", {"t2"}, now=1.0)
    watch.heartbeat("w1", set(), now=2.0)  # gone from w1's heartbeats
    watch.heartbeat("w2", {"t2"}, now=30.0)
    assert watch.check(now=6.9) == []
    assert [task for task, _ in watch.check(now=7.0)] == ["t1"]
    assert watch.check(now=60.0) == []  # t2 is still listed: running for a long time is fine
    watch.finished("t2")
    assert "t2" not in watch


def test_a_result_before_the_deadline_stops_the_watch() -> None:
    watch = LostTaskWatch(start_deadline=1.0, vanish_grace=1.0)
    watch.assigned("t1", "w1", now=0.0)
    watch.finished("t1")
    assert watch.check(now=100.0) == []


def test_listed_again_after_a_gap_is_not_lost() -> None:
    watch = LostTaskWatch(start_deadline=10.0, vanish_grace=5.0)
    watch.assigned("t1", "w1", now=0.0)
    watch.heartbeat("w1", {"t1"}, now=1.0)
    watch.heartbeat("w1", set(), now=2.0)
    watch.heartbeat("w1", {"t1"}, now=4.0)
    assert watch.check(now=20.0) == []
