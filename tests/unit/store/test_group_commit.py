"""GroupCommit: a caller's operation is committed when its await returns; operations
queued together are one transaction; each caller gets its own outcome."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloudai.store import (
    DuplicateError,
    GroupCommit,
    Store,
    StoreError,
    StoreOperation,
    TaskRecord,
    open_store,
)
from cloudai.store.sql_store import SqlStore


class CountingStore(SqlStore):
    """The real SQLite store, counting its batches (``apply`` calls) and their sizes."""

    batches: list[int]
    broken: bool

    def apply(self, operations: Sequence[StoreOperation]) -> list[object]:
        self.batches.append(len(operations))
        if self.broken:
            raise StoreError("database error: unable to open database file")
        return super().apply(operations)


@contextmanager
def counting_store(tmp_path: Path) -> Iterator[CountingStore]:
    store = open_store(None, tmp_path)
    assert isinstance(store, SqlStore)
    store.__class__ = CountingStore
    assert isinstance(store, CountingStore)
    store.batches = []
    store.broken = False
    try:
        yield store
    finally:
        store.close()


def add(task_id: str) -> StoreOperation:
    def operation(store: Store) -> str:
        store.add_task(TaskRecord(task_id, "w1", command="true"))
        return task_id

    return operation


def stored(tmp_path: Path) -> set[str]:
    """Task ids as another connection (another process, after a crash) sees them."""
    with open_store(None, tmp_path) as other:
        return {task.task_id for task in other.list_tasks(limit=None)}


async def test_commit_returns_once_committed(tmp_path: Path) -> None:
    with counting_store(tmp_path) as store:
        commits = GroupCommit(store)
        commits.start()
        assert await commits.commit(add("t1")) == "t1"
        assert stored(tmp_path) == {"t1"}
        await commits.stop()


async def test_operations_queued_together_are_one_transaction(tmp_path: Path) -> None:
    with counting_store(tmp_path) as store:
        commits = GroupCommit(store)
        waiters = [asyncio.ensure_future(commits.commit(add(f"t{i}"))) for i in range(50)]
        await asyncio.sleep(0)  # all of them queued before the committer runs
        commits.start()
        assert await asyncio.gather(*waiters) == [f"t{i}" for i in range(50)]
        assert store.batches == [50]
        assert commits.stats.transactions == 1 and commits.stats.largest_batch == 50
        assert len(stored(tmp_path)) == 50
        await commits.stop()


async def test_max_batch_caps_a_transaction(tmp_path: Path) -> None:
    with counting_store(tmp_path) as store:
        commits = GroupCommit(store, max_batch=20)
        waiters = [asyncio.ensure_future(commits.commit(add(f"t{i}"))) for i in range(50)]
        await asyncio.sleep(0)
        commits.start()
        await asyncio.gather(*waiters)
        assert store.batches == [20, 20, 10]
        await commits.stop()


async def test_one_bad_operation_fails_alone(tmp_path: Path) -> None:
    with counting_store(tmp_path) as store:
        store.add_task(TaskRecord("taken", "w1", command="true"))
        commits = GroupCommit(store)
        ids = ["a", "taken", "b"]
        waiters = [asyncio.ensure_future(commits.commit(add(i))) for i in ids]
        await asyncio.sleep(0)
        commits.start()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert outcomes[0] == "a" and outcomes[2] == "b"
        assert isinstance(outcomes[1], DuplicateError)
        # The batch was rolled back and applied again one by one.
        assert store.batches == [3, 1, 1, 1]
        assert commits.stats.retried_batches == 1 and commits.stats.failed_operations == 1
        assert stored(tmp_path) == {"a", "b", "taken"}
        await commits.stop()


async def test_a_failing_database_fails_the_batch_at_once(tmp_path: Path) -> None:
    with counting_store(tmp_path) as store:
        store.broken = True
        commits = GroupCommit(store)
        waiters = [asyncio.ensure_future(commits.commit(add(f"t{i}"))) for i in range(10)]
        await asyncio.sleep(0)
        commits.start()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(o, StoreError) for o in outcomes)
        assert store.batches == [10, 0]  # the batch, then one empty probe: no 10 retries
        store.broken = False
        assert await commits.commit(add("t0")) == "t0"  # and it recovers
        await commits.stop()


async def test_write_later_keeps_the_order_and_logs_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with counting_store(tmp_path) as store:
        commits = GroupCommit(store)
        commits.start()
        await commits.commit(add("t1"))
        order: list[str] = []

        def note(what: str) -> StoreOperation:
            def operation(store: Store) -> None:
                order.append(what)

            return operation

        commits.write_later(note("behind"))
        await commits.commit(note("ahead"))
        assert order == ["behind", "ahead"]
        commits.write_later(add("t1"), "task t1 again")  # a duplicate: logged
        with caplog.at_level(logging.ERROR, "cloudai.store.group_commit"):
            await commits.barrier()
        assert "store write of task t1 again failed" in caplog.text
        await commits.stop()


async def test_one_transaction_each_when_not_grouped(tmp_path: Path) -> None:
    with counting_store(tmp_path) as store:
        commits = GroupCommit(store, grouped=False)
        waiters = [asyncio.ensure_future(commits.commit(add(f"t{i}"))) for i in range(5)]
        await asyncio.sleep(0)
        commits.start()
        await asyncio.gather(*waiters)
        assert store.batches == [1, 1, 1, 1, 1]
        assert commits.stats.transactions == 5
        await commits.stop()


async def test_stop_commits_what_is_queued_then_refuses(tmp_path: Path) -> None:
    with counting_store(tmp_path) as store:
        commits = GroupCommit(store)
        commits.start()
        commits.write_later(add("queued"))
        await commits.stop()
        assert stored(tmp_path) == {"queued"}
        with pytest.raises(StoreError, match="closing"):
            await commits.commit(add("late"))


async def test_stop_before_start_fails_the_waiters(tmp_path: Path) -> None:
    with counting_store(tmp_path) as store:
        commits = GroupCommit(store)
        waiter = asyncio.ensure_future(commits.commit(add("t1")))
        await asyncio.sleep(0)
        await commits.stop()
        with pytest.raises(StoreError, match="closed before"):
            await waiter


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with counting_store(tmp_path) as store:
        with pytest.raises(ValueError):
            GroupCommit(store, window=-1)
        with pytest.raises(ValueError):
            GroupCommit(store, max_batch=0)
