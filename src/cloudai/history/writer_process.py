"""The history writer in a process of its own (``history_writer = "process"``, the default).

``HistoryRecorder`` writes from a thread of the master: its batches (the minute and hour
buckets in Python, the rows bound for the store: ~10-25 ms of the GIL a second at 1,000
heartbeats/s) then compete with the event loop for the interpreter, and every heartbeat
that arrives meanwhile reaches the dashboards up to a millisecond later (measured:
heartbeat-to-dashboard p99 2.6-3.5 ms with history, 1.5-1.7 ms without, at 1,000/s;
docs/PERFORMANCE.md). ``HistoryProcess`` keeps the master's side of the recorder (the
O(1) subscriber and its bounded buffer, the queries, which only read the store) and moves
the writing into a child process that runs an ordinary ``HistoryRecorder`` on its own
connection to the same database:

- every ``flush_interval`` the master sends what its buffer holds, as plain tuples, over
  a pipe (pickled in a thread, never on the event loop); the child buckets and writes
  them exactly as the thread did, and prunes;
- the child's counters (rows written, buckets, batches, failures, pruned) are in shared
  memory, so ``/metrics`` reads them without a round trip;
- at stop the master sends the rest and ``stop``: the child writes the buffer and the
  open buckets, as the thread did, and exits;
- a child that dies is started again at the next batch (its samples go back into the
  buffer, bounded as always), with one log line and a counter; a heartbeat never waits.

The child is started with ``spawn`` when the first batch is sent: a fresh interpreter
(~0.6 s of CPU once, in the background), nothing inherited from the master's threads.
``history_writer = "thread"`` keeps the writing in a thread of the master.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

from cloudai.history.recorder import HistoryConfig, HistoryRecorder, HistoryStats
from cloudai.history.tiers import Sample
from cloudai.store import Store

log = logging.getLogger(__name__)

STOP_TIMEOUT = 30.0
"""Seconds the master waits for the child to write its last batch at stop."""
SPAWN_WAIT_MAX = 60.0
"""Seconds at most between two tries to start a child that could not start."""
START_TIMEOUT = 60.0
"""Seconds the master waits for a new child to be ready (open the store, rebuild the open
buckets) before a batch is sent to it."""
_COUNTERS = ("dropped", "written", "buckets", "batches", "failed_batches", "pruned", "recovered")
"""The child's ``HistoryStats`` fields the master shows (its own: samples, dropped)."""

Row = tuple[str, float, tuple[float | None, ...]]


class WriterGone(Exception):
    """The child process is not there to take a batch (it exited or never started)."""


class WriterWaiting(WriterGone):
    """No child yet: the last one could not start, and the next try is not due."""


class HistoryProcess(HistoryRecorder):
    """A ``HistoryRecorder`` whose writing runs in a child process (see the module)."""

    def __init__(
        self,
        store: Store,
        database_url: str,
        config: HistoryConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, config, clock=clock)
        self._database_url = database_url
        self._context = multiprocessing.get_context("spawn")
        self._counters: list[Any] = [self._context.Value("q", 0, lock=False) for _ in _COUNTERS]
        self._child: SpawnProcess | None = None
        self._conn: Connection | None = None
        # One thread at a time talks to the child (a batch, a flush, the stop), so a stop
        # never overtakes a batch still being handed over.
        self._pipe_lock = threading.Lock()
        self._spawn_wait = 0.0  # after a failed start: seconds before the next try
        self._next_spawn = 0.0  # monotonic time of that try
        self.restarts = 0  # children started after the first one

    @property
    def writer_pid(self) -> int | None:
        """The child's process id (None: none running)."""
        child = self._child
        return child.pid if child is not None and child.is_alive() else None

    # -- the child ---------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start a child and wait until it is ready (in a thread: this blocks). After a
        child that could not start, the next try waits 1 s, doubling up to a minute."""
        now = time.monotonic()
        if now < self._next_spawn:  # said once, when the start failed
            raise WriterWaiting(f"started again in {self._next_spawn - now:.0f} s")
        try:
            self._start_child()
        except WriterGone:
            self._spawn_wait = min(SPAWN_WAIT_MAX, max(1.0, 2 * self._spawn_wait))
            self._next_spawn = time.monotonic() + self._spawn_wait
            raise
        self._spawn_wait = 0.0

    def _start_child(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=serve,
            args=(child, self._database_url, self.config, self._counters),
            name="cloudai-history-writer",
            daemon=True,
        )
        process.start()
        child.close()
        answer: object = f"no answer in {START_TIMEOUT:g} s"
        try:
            if parent.poll(START_TIMEOUT):
                answer = parent.recv()
        except (EOFError, OSError):
            answer = f"it exited (code {process.exitcode})"
        if answer != "ready":
            if process.is_alive():
                process.kill()
            process.join(5)
            parent.close()
            raise WriterGone(f"the history writer could not start: {answer}")
        self._child, self._conn = process, parent

    def _send(self, rows: list[Row]) -> None:
        """Hand a batch to the child, starting one first if there is none (blocking)."""
        with self._pipe_lock:
            self._send_locked(rows)

    def _send_locked(self, rows: list[Row]) -> None:
        if self._child is None or not self._child.is_alive():
            if self._child is not None:
                self.restarts += 1
                log.warning(
                    "history: the writer process exited (code %s); starting it again",
                    self._child.exitcode,
                )
                self._close_conn()
            self._spawn()
        assert self._conn is not None
        try:
            self._conn.send(("samples", rows))
        except (OSError, ValueError) as exc:  # the pipe broke: the child is gone
            raise WriterGone(str(exc)) from None

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._child = None

    def _stop_child(self, rows: list[Row]) -> bool:
        """The last batch, then ``stop``: True once the child wrote everything and exited."""
        with self._pipe_lock:
            self._next_spawn = 0.0  # the last batch may start one at once
            return self._stop_locked(rows)

    def _stop_locked(self, rows: list[Row]) -> bool:
        if self._child is None or not self._child.is_alive():
            if not rows:
                return True
            self._spawn()
        assert self._conn is not None and self._child is not None
        try:
            if rows:
                self._conn.send(("samples", rows))
            self._conn.send(("stop", None))
            done = self._conn.poll(STOP_TIMEOUT) and self._conn.recv() == "stopped"
        except (OSError, EOFError, ValueError):
            done = False
        self._child.join(5 if done else 0)
        if self._child.is_alive():
            self._child.kill()
            self._child.join(5)
        self._close_conn()
        return bool(done)

    # -- the recorder's life -------------------------------------------------------------------

    async def start(self) -> None:
        """Send every interval; the child starts with the first batch (it then rebuilds
        the open buckets), so a master that hears no heartbeat never starts one."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="history-sender")

    async def _run(self) -> None:
        interval = self.config.flush_interval
        while True:
            await asyncio.sleep(interval)
            await self._send_buffer()

    async def _send_buffer(self) -> bool:
        rows = self._take_rows()
        if not rows:
            return True
        try:
            await asyncio.to_thread(self._send, rows)
        except WriterGone as exc:
            self.stats.failed_batches += 1
            if not isinstance(exc, WriterWaiting):
                log.warning("history: a batch was not handed to the writer (kept): %s", exc)
            self._requeue([Sample(*row) for row in rows])
            return False
        return True

    def _take_rows(self) -> list[Row]:
        buffer = self._buffer
        taken = [buffer.popleft() for _ in range(len(buffer))]
        return [(s.worker_id, s.t, s.values) for s in taken]

    async def flush(self) -> bool:
        """Send what is buffered and wait until the child has written it."""
        if not await self._send_buffer():
            return False
        return await asyncio.to_thread(self._ask, "flush")

    def _ask(self, what: str) -> bool:
        with self._pipe_lock:
            conn = self._conn
            if conn is None:
                return True  # no child: nothing was ever sent, nothing waits to be written
            try:
                conn.send((what, None))
                return bool(conn.poll(STOP_TIMEOUT) and conn.recv() == f"{what}ed")
            except (OSError, EOFError, ValueError):
                return False

    async def stop(self) -> None:
        """Stop sending; the child writes the rest and the open buckets, then exits."""
        await self._detach()
        rows = self._take_rows()
        try:
            done = await asyncio.to_thread(self._stop_child, rows)
        except WriterGone as exc:
            log.warning("history: the writer could not take the last batch: %s", exc)
            done = False
        if not done:
            log.warning("history: %d samples may not have been written at stop", len(rows))

    def current_stats(self) -> HistoryStats:
        """This process's counters (samples taken, dropped here) with the child's."""
        own = self.stats
        counters = zip(_COUNTERS, self._counters, strict=True)
        child = {name: int(value.value) for name, value in counters}
        return HistoryStats(
            samples=own.samples,
            dropped=own.dropped + child["dropped"],
            written=child["written"],
            buckets=child["buckets"],
            batches=child["batches"],
            failed_batches=own.failed_batches + child["failed_batches"],
            pruned=child["pruned"],
            recovered=child["recovered"],
            writer_restarts=self.restarts,
        )


# -- the child's side ------------------------------------------------------------------------


def serve(
    conn: Connection,
    database_url: str,
    config: HistoryConfig,
    counters: list[Any],
) -> None:
    """The child: a ``HistoryRecorder`` on its own store, fed by the pipe."""
    # Ctrl-C in a terminal reaches the whole process group: the master decides when this
    # child stops (``stop`` on the pipe, or the pipe's end when the master is gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s history-writer %(levelname)s %(message)s"
    )
    try:
        store = open_child_store(database_url)
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    recorder = HistoryRecorder(store, config)
    recorder.recover(time.time())
    publish(recorder.stats, counters)
    conn.send("ready")
    try:
        run_child(conn, recorder, counters)
    finally:
        store.close()


def open_child_store(database_url: str) -> Store:
    """The master's database, already migrated by the master: opened without a check."""
    from sqlalchemy.engine import make_url

    from cloudai.store import SqlStore

    return SqlStore(make_url(database_url), migrate=False)


def run_child(conn: Connection, recorder: HistoryRecorder, counters: list[Any]) -> None:
    interval = recorder.config.flush_interval
    next_flush = time.monotonic() + interval
    while True:
        wait = max(0.0, next_flush - time.monotonic())
        try:
            message: Any = conn.recv() if conn.poll(wait) else None
        except (EOFError, OSError):  # the master is gone: write what we hold, and end
            recorder.flush_now(time.time(), final=True)
            publish(recorder.stats, counters)
            return
        if message is not None:
            kind, body = message
            if kind == "samples":
                recorder.take(Sample(*row) for row in body)
                continue
            final = kind == "stop"
            recorder.flush_now(time.time(), final=final)
            publish(recorder.stats, counters)
            conn.send(f"{kind}ed" if not final else "stopped")
            if final:
                return
            continue
        recorder.flush_now(time.time())
        publish(recorder.stats, counters)
        next_flush = time.monotonic() + interval


def publish(stats: HistoryStats, counters: list[Any]) -> None:
    for name, value in zip(_COUNTERS, counters, strict=True):
        value.value = getattr(stats, name)
