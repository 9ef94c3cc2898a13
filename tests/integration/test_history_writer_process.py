"""The history writer in a child process (``HistoryProcess``) on SQLite and PostgreSQL:
batches written by the child, a killed child started again without losing the batch,
the open buckets written at stop, and the master's choice of writer."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloudai.history.recorder import HistoryConfig, HistoryRecorder
from cloudai.history.writer_process import HistoryProcess
from cloudai.master.server import history_recorder
from cloudai.master.settings import MasterSettings
from cloudai.store import Store, open_store
from cloudai.store.sql_store import SqlStore
from cloudai.store.urls import resolve_url
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry
from tests.harness import async_wait_until


def beat(worker_id: str, t: float, cpu: float) -> WorkerTelemetry:
    return WorkerTelemetry(
        worker_id,
        cpu_usage=cpu,
        memory_usage=50.0,
        running_tasks=[TaskTelemetry("t1")],
        last_update=t,
        is_active=True,
        state="active",
    )


def count(store: Store, table: str) -> int:
    assert isinstance(store, SqlStore)
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


@pytest.fixture
async def store(database_url: str | None, tmp_path: Path) -> AsyncIterator[Store]:
    """SQLite in tmp_path, and an emptied PostgreSQL database."""
    s = await asyncio.to_thread(open_store, database_url, tmp_path)
    yield s
    s.close()


@pytest.fixture
def url(database_url: str | None, tmp_path: Path) -> str:
    """The same database, as the child process is given it."""
    return resolve_url(database_url, tmp_path).render_as_string(hide_password=False)


async def test_batches_are_written_by_a_child_that_comes_back_after_a_kill(
    store: Store, url: str
) -> None:
    recorder = HistoryProcess(store, url, HistoryConfig(flush_interval=0.2))
    await recorder.start()
    assert recorder.writer_pid is None  # started by the first batch, not before
    assert await recorder.flush()  # nothing to write: no child needed
    assert recorder.writer_pid is None
    now = time.time()
    try:
        for i in range(5):
            recorder.on_telemetry(beat("w1", now - 25 + 5 * i, float(i)), TelemetryEvent.UPDATE)
        assert await recorder.flush()
        first = recorder.writer_pid
        assert first is not None and first != os.getpid()
        assert count(store, "history_raw") == 5
        stats = recorder.current_stats()
        assert (stats.samples, stats.written, stats.writer_restarts) == (5, 5, 0)

        os.kill(first, signal.SIGINT)  # Ctrl-C in a terminal: the master decides, not it
        recorder.on_telemetry(beat("w1", now, 5.0), TelemetryEvent.UPDATE)
        assert await recorder.flush()
        assert recorder.writer_pid == first and count(store, "history_raw") == 6

        os.kill(first, signal.SIGKILL)

        async def gone() -> bool:
            return recorder.writer_pid is None

        await async_wait_until(gone, 10, "the killed writer gone")
        recorder.on_telemetry(beat("w1", now + 5, 9.0), TelemetryEvent.UPDATE)  # a new one
        assert await recorder.flush()  # a new child takes the batch
        assert recorder.writer_pid not in (None, first)
        assert count(store, "history_raw") == 7
        assert recorder.current_stats().writer_restarts == 1
        # The minute of the last heartbeat (5 s from now) cannot have closed yet.
        minutes = count(store, "history_minute")
    finally:
        await recorder.stop()
    assert recorder.writer_pid is None
    assert count(store, "history_minute") > minutes  # the open buckets, written at stop


async def test_stop_writes_what_was_sent_last(store: Store, url: str) -> None:
    recorder = HistoryProcess(store, url, HistoryConfig(flush_interval=3600))
    await recorder.start()
    now = time.time()
    for i in range(3):
        recorder.on_telemetry(beat(f"w{i}", now, 1.0), TelemetryEvent.UPDATE)
    await recorder.stop()  # no flush before: the last batch goes with stop
    assert count(store, "history_raw") == 3
    assert recorder.current_stats().written == 3


def test_the_master_writes_in_a_child_unless_told_a_thread(tmp_path: Path) -> None:
    store: Any = object()  # not touched before start
    assert isinstance(history_recorder(MasterSettings(data_dir=tmp_path), store), HistoryProcess)
    thread = MasterSettings(data_dir=tmp_path, history_writer="thread")
    assert type(history_recorder(thread, store)) is HistoryRecorder


async def test_a_writer_that_cannot_start_keeps_the_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await asyncio.to_thread(open_store, None, tmp_path)
    # A database the child cannot open: it answers with the reason instead of "ready".
    config = HistoryConfig(flush_interval=3600)
    recorder = HistoryProcess(store, "mysql://nobody@127.0.0.1/none", config)
    await recorder.start()
    try:
        recorder.on_telemetry(beat("w1", time.time(), 1.0), TelemetryEvent.UPDATE)
        assert not await recorder.flush()
        assert recorder.pending == 1  # kept for the next try
        assert not await recorder.flush()  # the next try is not due: no second start
        stats = recorder.current_stats()
        assert (stats.failed_batches, stats.written) == (2, 0)
        lines = [r.getMessage() for r in caplog.records if "not handed" in r.getMessage()]
        assert len(lines) == 1 and "could not start" in lines[0], lines
        assert recorder.writer_pid is None
    finally:
        await recorder.stop()
        store.close()
