"""HeartbeatWriteBehind with a fake store: batching, shutdown flush, failures."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloudai.store import HeartbeatWriteBehind, WorkerRecord, open_store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class FakeStore:
    def __init__(self) -> None:
        self.batches: list[dict[str, datetime]] = []
        self.fail_next = 0
        self.threads: set[int] = set()
        self.block: threading.Event | None = None

    def record_heartbeats(self, beats: Mapping[str, datetime]) -> None:
        self.threads.add(threading.get_ident())
        if self.block is not None:
            self.block.wait(5)
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("database is down")
        self.batches.append(dict(beats))


async def wait_for(predicate, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_touch_is_plain_and_keeps_the_newest_time() -> None:
    wb = HeartbeatWriteBehind(FakeStore(), interval=1.0)
    assert not inspect.iscoroutinefunction(wb.touch)
    wb.touch("w1", at(2))
    wb.touch("w1", at(1))  # out of order: ignored
    wb.touch("w2", at(1))
    wb.touch("w2", at(3))
    assert wb.pending == 2


def test_bad_interval() -> None:
    with pytest.raises(ValueError):
        HeartbeatWriteBehind(FakeStore(), interval=0)


async def test_one_batch_per_interval_off_the_event_loop_thread() -> None:
    store = FakeStore()
    wb = HeartbeatWriteBehind(store, interval=0.05)
    wb.start()
    for i in range(100):
        wb.touch(f"w{i % 10}", at(i))
    await wait_for(lambda: len(store.batches) == 1)
    assert store.batches[0] == {f"w{k}": at(90 + k) for k in range(10)}
    assert wb.pending == 0
    assert threading.get_ident() not in store.threads
    wb.touch("w1", at(500))
    await wait_for(lambda: len(store.batches) == 2)
    assert store.batches[1] == {"w1": at(500)}
    await asyncio.sleep(0.12)  # nothing pending: no empty batches
    assert len(store.batches) == 2
    await wb.stop()
    assert not wb.running


async def test_stop_flushes_what_is_pending() -> None:
    store = FakeStore()
    wb = HeartbeatWriteBehind(store, interval=3600)
    wb.start()
    wb.touch("w1", at(1))
    wb.touch("w2", at(2))
    await asyncio.sleep(0)
    assert store.batches == []
    await wb.stop()
    assert store.batches == [{"w1": at(1), "w2": at(2)}]
    assert wb.pending == 0


async def test_stop_without_start_still_flushes() -> None:
    store = FakeStore()
    wb = HeartbeatWriteBehind(store, interval=1.0)
    wb.touch("w1", at(1))
    await wb.stop()
    assert store.batches == [{"w1": at(1)}]


async def test_a_failed_batch_is_merged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloudai.store.write_behind")
    store = FakeStore()
    store.fail_next = 2
    wb = HeartbeatWriteBehind(store, interval=0.02)
    wb.start()
    wb.touch("w1", at(1))
    wb.touch("w2", at(1))
    await wait_for(lambda: wb.failed_batches == 1)
    wb.touch("w1", at(5))  # newer than the failed batch's time: wins
    await wait_for(lambda: len(store.batches) == 1)
    assert store.batches[0] == {"w1": at(5), "w2": at(1)}
    assert wb.failed_batches == 2
    assert wb.running  # the loop survived
    await wb.stop()
    assert "failed" in caplog.text
    assert "writing again after 2 failure(s)" in caplog.text


async def test_a_touch_during_a_failing_flush_is_not_lost() -> None:
    store = FakeStore()
    store.fail_next = 1
    store.block = threading.Event()
    wb = HeartbeatWriteBehind(store, interval=3600)
    wb.touch("w1", at(1))
    wb.touch("w3", at(1))
    flush = asyncio.create_task(wb.flush())
    await asyncio.sleep(0.01)
    wb.touch("w1", at(9))  # arrives while the batch is being written
    wb.touch("w2", at(9))
    store.block.set()
    assert await flush is False
    store.block = None
    assert await wb.flush() is True
    assert store.batches == [{"w1": at(9), "w2": at(9), "w3": at(1)}]


async def test_stop_gives_up_after_its_timeout(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    store.block = threading.Event()
    wb = HeartbeatWriteBehind(store, interval=3600)
    wb.touch("w1", at(1))
    with caplog.at_level(logging.WARNING):
        await wb.stop(timeout=0.05)
    store.block.set()
    assert wb.pending == 1
    assert "not written at shutdown" in caplog.text


async def test_start_twice_is_an_error() -> None:
    wb = HeartbeatWriteBehind(FakeStore(), interval=3600)
    wb.start()
    with pytest.raises(RuntimeError):
        wb.start()
    await wb.stop()


async def test_with_a_real_sqlite_store(tmp_path: Path) -> None:
    with open_store(None, tmp_path) as store:
        store.upsert_worker(WorkerRecord("w1", "127.0.0.1:1"))
        wb = HeartbeatWriteBehind(store, interval=0.02)
        wb.start()
        wb.touch("w1", at(1))
        await wait_for(lambda: wb.flushed_batches == 1)
        wb.touch("w1", at(2))
        await wb.stop()
        got = store.get_worker("w1")
        assert got is not None and got.last_heartbeat == at(2) and got.is_active
