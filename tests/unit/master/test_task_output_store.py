"""The master's task output on disk (TaskOutputStore) and its use cases (TaskOutputs):
chunks stored and read back, a restart reads what is held, the cap, refusals, the long
poll. Real files in a temporary directory; no sockets."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any, cast

import pytest

from cloudai.master.output_service import (
    END_GRACE,
    OutputRefused,
    TaskOutputs,
    check_chunk,
    output_complete,
)
from cloudai.master.task_output import OutputDeleted, RunSnapshot, TaskOutputStore
from cloudai.master.tasks import TaskBook, TaskError, TaskState
from cloudai.proto import pb
from cloudai.task_status import TaskStatus
from cloudai.validation import InvalidMessage


class FakeBook:
    """What TaskOutputs needs of the TaskBook."""

    def __init__(self, *tasks: TaskState) -> None:
        self.tasks = {task.task_id: task for task in tasks}
        self.listeners: list[Any] = []

    def get(self, task_id: str) -> TaskState:
        if task_id not in self.tasks:
            raise TaskError("not_found", f"unknown task {task_id!r}")
        return self.tasks[task_id].copy()

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def change(self, task: TaskState) -> None:
        self.tasks[task.task_id] = task
        for listener in self.listeners:
            listener(task.copy())


def chunk(offset: int, data: bytes, final: bool = False, **fields: Any) -> pb.TaskOutput:
    values: dict[str, Any] = {"task_id": "t1", "worker_id": "w1", "attempt": 1}
    values.update(fields)
    return pb.TaskOutput(offset=offset, data=data, final=final, **values)


@pytest.fixture
def book() -> FakeBook:
    return FakeBook(TaskState("t1", "w1", status=TaskStatus.RUNNING))


def outputs(book: FakeBook, root: Path, cap: int = 1024) -> TaskOutputs:
    return TaskOutputs(cast(TaskBook, book), TaskOutputStore(root, cap), clock=lambda: 2000.0)


async def test_chunks_are_stored_and_read_back(tmp_path: Path, book: FakeBook) -> None:
    service = outputs(book, tmp_path)
    ack = await service.append(chunk(0, b"hello "))
    assert (ack.success, ack.next_offset) == (True, 6)
    ack = await service.append(chunk(3, b"lo world\n"))  # overlaps: trimmed
    assert (ack.success, ack.next_offset) == (True, 12)
    assert (tmp_path / "t1" / "1.log").read_bytes() == b"hello world\n"
    got = await service.read("t1", 0, 100)
    assert (got.data, got.size, got.complete, got.next_offset) == (b"hello world\n", 12, False, 12)
    got = await service.read("t1", 6, 3)
    assert (got.data, got.next_offset) == (b"wor", 9)
    got = await service.read("t1", 50, 10)  # past what is held: nothing, not an error
    assert (got.data, got.next_offset) == (b"", 50)


async def test_a_gap_is_answered_with_what_is_held(tmp_path: Path, book: FakeBook) -> None:
    service = outputs(book, tmp_path)
    await service.append(chunk(0, b"abc"))
    ack = await service.append(chunk(10, b"xyz"))
    assert not ack.success and ack.next_offset == 3 and "gap" in ack.message


async def test_final_is_durable_and_a_restart_reads_back_what_is_held(
    tmp_path: Path, book: FakeBook
) -> None:
    service = outputs(book, tmp_path)
    await service.append(chunk(0, b"part one\n"))
    service.store.close()
    # A new master on the same directory: it holds what the file holds.
    service = outputs(book, tmp_path)
    ack = await service.append(chunk(0, b"part one\npart two\n", final=True))
    assert (ack.success, ack.next_offset) == (True, 18)
    meta = json.loads((tmp_path / "t1" / "1.json").read_bytes())
    assert meta == {"final": True, "accepted": 18}
    service.store.close()
    service = outputs(book, tmp_path)
    got = await service.read("t1", 0, 100)
    assert (got.data, got.complete) == (b"part one\npart two\n", True)


async def test_the_master_keeps_the_first_bytes_up_to_its_cap(
    tmp_path: Path, book: FakeBook
) -> None:
    service = outputs(book, tmp_path, cap=10)
    ack = await service.append(chunk(0, b"0123456789abcdef"))
    assert ack.success and ack.next_offset == 16 and "first 10 bytes" in ack.message
    ack = await service.append(chunk(16, b"", final=True))
    got = await service.read("t1", 0, 100)
    assert (got.data, got.size, got.truncated, got.complete) == (b"0123456789", 10, True, True)


async def test_only_the_tasks_own_worker_and_issued_attempts(
    tmp_path: Path, book: FakeBook
) -> None:
    service = outputs(book, tmp_path)
    with pytest.raises(OutputRefused, match="assigned to worker 'w1', not 'w2'"):
        await service.append(chunk(0, b"x", worker_id="w2"))
    with pytest.raises(OutputRefused, match="never assigned"):
        await service.append(chunk(0, b"x", task_id="nope"))
    with pytest.raises(OutputRefused, match="no attempt 2"):
        await service.append(chunk(0, b"x", attempt=2))
    assert not (tmp_path / "t1").exists()


def test_invalid_chunks() -> None:
    with pytest.raises(InvalidMessage):
        check_chunk(chunk(0, b"x", task_id="../etc"))
    with pytest.raises(InvalidMessage, match="at most"):
        check_chunk(chunk(0, b"x" * (1024 * 1024 + 1)))
    check_chunk(chunk(0, b"x" * 1024 * 1024))


async def test_attempts_are_kept_apart(tmp_path: Path, book: FakeBook) -> None:
    service = outputs(book, tmp_path)
    await service.append(chunk(0, b"first run\n"))
    retried = book.get("t1")
    retried.attempt, retried.status = 2, TaskStatus.QUEUED
    book.change(retried)
    await service.append(chunk(0, b"second\n", attempt=2))
    assert (await service.read("t1", 0, 100)).data == b"second\n"  # the current run
    first = await service.read("t1", 0, 100, attempt=1)
    assert (first.data, first.complete, first.attempt) == (b"first run\n", True, 1)
    with pytest.raises(TaskError, match="no attempt 3"):
        await service.read("t1", 0, 100, attempt=3)


async def test_the_long_poll_answers_when_bytes_come_or_the_run_ends(
    tmp_path: Path, book: FakeBook
) -> None:
    service = outputs(book, tmp_path)
    waiting = asyncio.ensure_future(service.read("t1", 0, 100, wait=20))
    await asyncio.sleep(0)  # it is waiting now
    assert not waiting.done()
    await service.append(chunk(0, b"news\n"))
    got = await asyncio.wait_for(waiting, 5)
    assert got.data == b"news\n" and not got.complete

    waiting = asyncio.ensure_future(service.read("t1", 5, 100, wait=20))
    await asyncio.sleep(0)
    ended = book.get("t1")
    ended.status, ended.finished_at = TaskStatus.CANCELLED, 1000.0  # no final chunk came
    book.change(ended)
    got = await asyncio.wait_for(waiting, 5)
    assert (got.data, got.complete, got.size) == (b"", True, 5)


def test_when_a_runs_output_is_complete() -> None:
    held, final = RunSnapshot(5, False, False), RunSnapshot(5, True, False)
    assert output_complete(final, None, now=0.0) == (True, math.inf)
    assert output_complete(held, None, now=0.0) == (False, math.inf)  # still running
    # Ended without its final chunk: more may still come for END_GRACE seconds...
    assert output_complete(held, 100.0, now=101.0) == (False, END_GRACE - 1.0)
    assert output_complete(held, 100.0, now=100.0 + END_GRACE) == (True, math.inf)
    # ...unless nothing was ever streamed (a worker that does not stream).
    assert output_complete(RunSnapshot(0, False, False), 100.0, now=100.0) == (True, math.inf)


async def test_a_poll_without_news_ends_after_its_wait(tmp_path: Path, book: FakeBook) -> None:
    service = outputs(book, tmp_path)
    got = await service.read("t1", 0, 100, wait=0.05)
    assert (got.data, got.complete) == (b"", False)


async def test_output_past_the_retention_is_deleted_and_says_so(tmp_path: Path) -> None:
    old = TaskState("old", "w1", status=TaskStatus.SUCCESS, finished_at=1000.0)
    recent = TaskState("recent", "w1", status=TaskStatus.FAILURE, finished_at=1900.0)
    running = TaskState("running", "w1", status=TaskStatus.RUNNING)
    book = FakeBook(old, recent, running)
    store = TaskOutputStore(tmp_path, 1024)
    service = TaskOutputs(cast(TaskBook, book), store, clock=lambda: 2000.0, retention=500.0)
    for task_id in ("old", "recent", "running"):
        await service.append(chunk(0, b"out\n", task_id=task_id))
    (tmp_path / "stranger").mkdir()  # not a task of this master: left alone
    (tmp_path / "stranger" / "1.log").write_bytes(b"x")

    assert await service.prune(2000.0) == 1  # only "old" finished before 1500
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["pruned.json"]
    assert store.pruned_at("old") == 2000.0 and store.pruned_at("recent") is None
    assert (tmp_path / "recent" / "1.log").exists() and (tmp_path / "stranger" / "1.log").exists()
    with pytest.raises(OutputDeleted, match=r"task 'old' was deleted at .* task_output_retention"):
        await service.read("old", 0, 100)
    assert (await service.read("recent", 0, 100)).data == b"out\n"
    assert await service.prune(2000.0) == 0  # deleted once
    assert service.pruned_tasks == 1


async def test_no_retention_keeps_every_output(tmp_path: Path) -> None:
    old = TaskState("old", "w1", status=TaskStatus.SUCCESS, finished_at=1.0)
    service = TaskOutputs(cast(TaskBook, FakeBook(old)), TaskOutputStore(tmp_path, 1024))
    await service.append(chunk(0, b"out\n", task_id="old"))
    assert await service.prune(10**9) == 0
    assert (await service.read("old", 0, 100)).data == b"out\n"
