"""Write-behind of heartbeat times: the heartbeat path never waits on the database.

``touch`` records the newest time per worker in a dict (O(1), no await). A
background task hands everything pending to ``record_heartbeats`` in one batch
every ``interval`` seconds, in a worker thread. A failed batch is logged and
merged back into what is pending, so the next flush retries it; the loop never
dies of it. ``stop`` flushes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

log = logging.getLogger(__name__)


class HeartbeatSink(Protocol):
    """What the write-behind needs of a store."""

    def record_heartbeats(self, beats: Mapping[str, datetime]) -> None: ...


class HeartbeatWriteBehind:
    def __init__(self, store: HeartbeatSink, interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        self._store = store
        self._interval = interval
        self._pending: dict[str, datetime] = {}
        self._flush_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0  # consecutive failed flushes
        self.flushed_batches = 0
        self.failed_batches = 0

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def pending(self) -> int:
        """Workers whose newest heartbeat time is not written yet."""
        return len(self._pending)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def touch(self, worker_id: str, when: datetime) -> None:
        """Note a heartbeat. O(1); never blocks. Keeps the newest time per worker."""
        previous = self._pending.get(worker_id)
        if previous is None or when > previous:
            self._pending[worker_id] = when

    def start(self) -> None:
        """Start the background flusher (needs a running event loop)."""
        if self.running:
            raise RuntimeError("the heartbeat write-behind is running already")
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="heartbeat-write-behind"
        )

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the flusher and write what is pending (one last try).

        ``timeout``: give up after that many seconds (the database hangs); what
        is not written then is logged, not raised.
        """
        task, self._task = self._task, None
        self._stopping.set()
        written = False
        try:
            async with asyncio.timeout(timeout):
                if task is not None:
                    await task  # the loop exits between flushes, never in the middle of one
                written = await self.flush()
        except TimeoutError:
            pass
        if not written and self._pending:
            log.warning(
                "heartbeat write-behind: %d heartbeat time(s) not written at shutdown",
                len(self._pending),
            )

    async def flush(self) -> bool:
        """Write everything pending in one batch now. False if the batch failed."""
        async with self._flush_lock:
            if not self._pending:
                return True
            batch, self._pending = self._pending, {}
            try:
                await asyncio.to_thread(self._store.record_heartbeats, batch)
            except asyncio.CancelledError:
                self._merge_back(batch)
                raise
            except Exception:
                self._merge_back(batch)
                self._failures += 1
                self.failed_batches += 1
                log.warning(
                    "heartbeat write-behind: writing %d heartbeat time(s) failed"
                    " (%d in a row); will retry",
                    len(batch),
                    self._failures,
                    exc_info=self._failures == 1,
                )
                return False
            if self._failures:
                log.info(
                    "heartbeat write-behind: writing again after %d failure(s)", self._failures
                )
                self._failures = 0
            self.flushed_batches += 1
            return True

    def _merge_back(self, batch: dict[str, datetime]) -> None:
        """Put a failed batch back, unless a newer time came in meanwhile."""
        for worker_id, when in batch.items():
            self.touch(worker_id, when)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            if self._stopping.is_set():
                return
            try:
                await self.flush()
            except Exception:  # pragma: no cover - flush handles the store's errors
                log.exception("heartbeat write-behind: unexpected error")
