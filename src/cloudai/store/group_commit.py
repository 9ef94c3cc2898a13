"""Write-ahead with group commit: a caller awaits the commit of its own operation, and
operations that arrive together share one transaction.

``await commit(operation)`` queues the operation (a ``StoreOperation``: called with the
store, inside a transaction) and returns its result once the transaction that holds it
has COMMITTED; if it raised, the exception is raised to the caller and nothing of the
operation is stored. One background task takes what is queued (everything that arrived
while the previous transaction was being committed, plus what arrives within ``window``
seconds of the first one), at most ``max_batch`` operations, and hands them to
``store.apply`` in a worker thread: one transaction, so one WAL fsync (SQLite) or one
commit round trip (PostgreSQL) for all of them. Under load the batches grow by
themselves; a lone operation is committed at once.

A failed batch is rolled back as a whole, then:

- if the database itself fails (an empty transaction fails too), every operation of the
  batch gets that error at once (not one connect timeout each);
- otherwise the operations are applied again, one transaction each, so that the one that
  failed (a duplicate id, an unknown task) fails alone and every caller gets the outcome
  of its own operation.

``write_later(operation)`` queues an operation nobody waits for, in the same order as
the awaited ones (so a later awaited write never lands before it); a failure is logged.
``grouped=False``: one transaction per operation, same queue and order (for
measurements).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from cloudai.store.base import DuplicateError, NotFoundError, Store, StoreError, StoreOperation

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Item:
    operation: StoreOperation | None  # None: a barrier, resolved when reached
    future: asyncio.Future[object] | None  # None: nobody waits (write_later)
    what: str
    queued: float = field(default_factory=time.monotonic)  # when it was queued


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


def is_database_failure(exc: BaseException) -> bool:
    """A failure of the database (unreachable, disk full...), not one operation's refusal."""
    return isinstance(exc, StoreError) and not isinstance(exc, DuplicateError | NotFoundError)


@dataclass(slots=True)
class GroupCommitStats:
    transactions: int = 0  # committed transactions that held operations
    operations: int = 0  # operations committed
    failed_operations: int = 0
    retried_batches: int = 0  # batches that failed and were applied one by one
    largest_batch: int = 0


class GroupCommit:
    def __init__(
        self,
        store: Store,
        *,
        window: float = 0.0,
        max_batch: int = 500,
        grouped: bool = True,
    ) -> None:
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self._store = store
        self.window = window
        self.max_batch = max_batch
        self.grouped = grouped
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._oldest: float | None = None  # when the oldest item being written was queued
        self.stats = GroupCommitStats()

    @property
    def pending(self) -> int:
        """Operations queued, not yet handed to the database."""
        return self._queue.qsize()

    def write_lag(self, now: float | None = None) -> float:
        """Seconds the oldest operation not yet committed has waited (0: nothing
        waits). The committer takes what is queued as soon as it is free, so the oldest
        waiting operation is the first of the batch it is writing."""
        oldest = self._oldest
        if oldest is None:
            return 0.0
        return max((time.monotonic() if now is None else now) - oldest, 0.0)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the committer (needs a running event loop). Operations queued before
        are committed first."""
        if self.running:
            raise RuntimeError("the group commit is running already")
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-commit")

    async def commit(self, operation: StoreOperation, what: str = "") -> object:
        """Queue ``operation`` and wait until it is committed; its result.

        Raises what the operation raised (then nothing of it is stored), or
        ``StoreError`` when the database fails or the store is closing. A caller that
        is cancelled while waiting does not withdraw the operation.
        """
        if self._closing:
            raise StoreError("the store is closing: nothing more is written")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(operation, future, what))
        return await future

    def write_later(self, operation: StoreOperation, what: str = "") -> None:
        """Queue ``operation`` without waiting (kept in order with the awaited ones)."""
        if self._closing:
            log.warning("store closing: %s not written", what or "an operation")
            return
        self._queue.put_nowait(_Item(operation, None, what))

    async def barrier(self) -> None:
        """Wait until everything queued before this call is written."""
        if self._closing and not self.running:
            return
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(None, future, "barrier"))
        await future

    async def stop(self) -> None:
        """Commit what is queued, then stop. Later ``commit`` calls raise StoreError."""
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            self._fail_queued(StoreError("the store closed before this was written"))
            return
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- the committer ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            self._oldest = first.queued
            if self.window > 0 and self._queue.qsize() + 1 < self.max_batch:
                await asyncio.sleep(self.window)  # let the same few milliseconds join
            batch, stopping = [first], False
            while len(batch) < self.max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                self._fail(batch, StoreError("the store writer was cancelled"))
                raise
            except Exception as exc:  # pragma: no cover - _write handles the store's errors
                log.exception("store commit: unexpected error")
                self._fail(batch, StoreError(f"unexpected error: {exc}"))
            finally:
                self._oldest = None
            if stopping:
                return

    async def _write(self, batch: list[_Item]) -> None:
        operations = [item.operation for item in batch if item.operation is not None]
        outcomes = await asyncio.to_thread(self._apply, operations) if operations else []
        done = iter(outcomes)
        for item in batch:
            outcome = None if item.operation is None else next(done)
            if isinstance(outcome, _Failed):
                self.stats.failed_operations += 1
                if item.future is None:
                    log.error(
                        "store write of %s failed: %s", item.what or "an operation", outcome.error
                    )
                elif not item.future.done():
                    item.future.set_exception(outcome.error)
            elif item.future is not None and not item.future.done():
                item.future.set_result(outcome)

    def _apply(self, operations: list[StoreOperation]) -> list[object]:
        """In a worker thread: the batch as one transaction, else one by one."""
        if not self.grouped or len(operations) == 1:
            return [self._one(operation) for operation in operations]
        try:
            results = self._store.apply(operations)
        except Exception as exc:
            self.stats.retried_batches += 1
            if is_database_failure(exc):
                try:
                    self._store.apply([])  # does the database work at all?
                except Exception as probe:
                    return [_Failed(probe)] * len(operations)
            return [self._one(operation) for operation in operations]
        self._committed(len(operations))
        return results

    def _one(self, operation: StoreOperation) -> object:
        try:
            (result,) = self._store.apply([operation])
        except Exception as exc:
            return _Failed(exc)
        self._committed(1)
        return result

    def _committed(self, count: int) -> None:
        self.stats.transactions += 1
        self.stats.operations += count
        self.stats.largest_batch = max(self.stats.largest_batch, count)

    def _fail(self, batch: list[_Item], error: Exception) -> None:
        for item in batch:
            if item.future is not None and not item.future.done():
                item.future.set_exception(error)

    def _fail_queued(self, error: Exception) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                self._fail([item], error)
