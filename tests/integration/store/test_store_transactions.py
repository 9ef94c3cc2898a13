"""``Store.transaction()`` and ``Store.apply``: several calls, one transaction, all or
nothing; the master's group commit, on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from cloudai.store import (
    AssignmentRecord,
    DuplicateError,
    GroupCommit,
    NotFoundError,
    ResultRecord,
    Store,
    TaskRecord,
)


def task(task_id: str) -> TaskRecord:
    return TaskRecord(task_id, "w1", command="true")


def test_apply_is_one_transaction(store: Store, open_: Callable[[], Store]) -> None:
    def submit_and_assign(s: Store) -> int:
        s.add_task(task("t1"))
        s.update_task("t1", status="assigned", message="accepted")
        return s.add_assignment(AssignmentRecord("t1", "w1", acknowledged=True))

    results = store.apply([submit_and_assign, lambda s: s.get_task("t1")])
    assert isinstance(results[0], int)
    read_inside = results[1]
    assert isinstance(read_inside, TaskRecord) and read_inside.status == "assigned"
    other = open_()
    stored = other.get_task("t1")
    assert stored is not None and stored.status == "assigned"
    assert len(other.list_assignments("t1")) == 1


def test_apply_is_all_or_nothing(store: Store) -> None:
    store.add_task(task("taken"))
    with pytest.raises(DuplicateError):
        store.apply([lambda s: s.add_task(task("a")), lambda s: s.add_task(task("taken"))])
    assert store.get_task("a") is None
    # A constraint the database enforces (PostgreSQL then aborts the transaction).
    with pytest.raises(NotFoundError):
        store.apply(
            [
                lambda s: s.add_task(task("b")),
                lambda s: s.save_result(ResultRecord("nope", "w1", "success")),
            ]
        )
    assert store.get_task("b") is None
    assert store.apply([lambda s: s.add_task(task("b"))]) == [None]  # the store still works


def test_a_transaction_is_not_seen_before_it_commits(
    store: Store, open_: Callable[[], Store]
) -> None:
    other = open_()
    inside = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with store.transaction():
            store.add_task(task("t1"))
            store.add_task(task("t2"))
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert inside.wait(10)
        assert other.get_task("t1") is None  # not committed yet
        # Another thread's calls are not part of it: they are their own transactions.
        assert store.get_task("t1") is None
    finally:
        release.set()
        thread.join(10)
    assert {t.task_id for t in other.list_tasks()} == {"t1", "t2"}


def test_nested_transactions_join_the_outer_one(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.add_task(task("t1"))
        with store.transaction():
            store.add_task(task("t2"))
        raise RuntimeError("roll back both")
    assert store.list_tasks() == []


async def test_group_commit_on_the_backend(store: Store, open_: Callable[[], Store]) -> None:
    commits = GroupCommit(store)
    store.add_task(task("taken"))

    def add(task_id: str) -> Callable[[Store], None]:
        return lambda s: s.add_task(task(task_id))

    ids = [f"t{i}" for i in range(40)] + ["taken"]
    waiters = [asyncio.ensure_future(commits.commit(add(i))) for i in ids]
    await asyncio.sleep(0)
    commits.start()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    await commits.stop()
    assert outcomes[:40] == [None] * 40
    assert isinstance(outcomes[40], DuplicateError)
    assert len(open_().list_tasks(limit=None)) == 41
