"""Task output on the master's disk: what workers stream with AppendTaskOutput, served
in ranges by ``GET /api/tasks/{task_id}/output`` (``output_api.py``).

Layout: ``<data_dir>/task-output/<task_id>/<attempt>.log`` holds the first bytes of one
run's output (at most ``max_bytes``, the master's ``task_output_max_bytes``), and
``<attempt>.json`` says ``{"final": true, "accepted": N}`` once the run's last chunk
came (or once the cap was reached, with ``"final": false``). A restarted master reads
both back: the size of the ``.log`` is what it holds.

Writes run in a small pool of threads, never on the event loop; one run's writes are
serialised (one writer per file). A chunk is acknowledged once ``pwrite`` returned: it
is in the kernel's page cache, so a master that is killed keeps it. The ``.log`` is
fsynced, and its ``.json`` written atomically, when the run's final chunk arrives,
before that is acknowledged; the worker keeps the run's output until then, so a power
loss before it costs nothing either: the restarted master says how much it holds and
the worker resends the rest.

The offset rules (overlap trimmed, gaps refused, bytes past the cap dropped) are
``output_ledger.RunLedger``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cloudai.master.output_ledger import AppendPlan, RunLedger

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MAX_BYTES = 64 * MIB
"""Bytes of one run's output the master keeps (the first ones), by default."""
MAX_CHUNK_BYTES = MIB
"""The largest ``TaskOutput.data`` the master takes in one message."""
MAX_READ_BYTES = 16 * MIB
"""The most one range request answers."""


class OutputUnavailable(Exception):
    """The output could not be written or read now (the disk): try again later."""


class OutputDeleted(Exception):
    """The task's output was deleted (older than the master's retention)."""


PRUNED = "pruned.json"
"""What is left of a task's output folder once its runs were deleted: when, and why."""


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """What is held of one run's output at a moment."""

    held: int
    final: bool
    truncated: bool


@dataclass(slots=True)
class _Run:
    ledger: RunLedger
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0

    def snapshot(self) -> RunSnapshot:
        return RunSnapshot(self.ledger.held, self.ledger.final, self.ledger.truncated)


class TaskOutputStore:
    """Every run's output under ``root``; ``max_bytes`` kept per run."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES, threads: int = 4) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.root = root
        self.max_bytes = max_bytes
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="task-output")
        self._runs: dict[tuple[str, int], _Run] = {}
        self._changed: dict[str, asyncio.Event] = {}  # task id -> set on any change
        self.bytes_written = 0
        self.bytes_dropped = 0

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def paths(self, task_id: str, attempt: int) -> tuple[Path, Path]:
        """The run's ``.log`` and ``.json`` (``task_id`` is a checked id: path-safe)."""
        folder = self.root / task_id
        return folder / f"{attempt}.log", folder / f"{attempt}.json"

    # -- runs in memory ---------------------------------------------------------------------

    async def _run_in_pool(self, function: Callable[[], object]) -> object:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function)
        except OSError as exc:
            raise OutputUnavailable(f"task output storage: {exc.strerror or exc}") from None

    @contextlib.asynccontextmanager
    async def _using(self, task_id: str, attempt: int) -> AsyncIterator[_Run]:
        """The run, loaded from disk if needed, locked; forgotten afterwards once final
        (a finished run costs no memory: it is read back from disk when asked)."""
        key = (task_id, attempt)
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = _Run(RunLedger(self.max_bytes, held=-1))
        run.users += 1
        try:
            async with run.lock:
                if run.ledger.held < 0:
                    loaded = await self._run_in_pool(lambda: self._load(task_id, attempt))
                    assert isinstance(loaded, RunLedger)
                    run.ledger = loaded
                yield run
        finally:
            run.users -= 1
            if run.users == 0 and (run.ledger.final or run.ledger.held < 0):
                self._runs.pop(key, None)

    def _load(self, task_id: str, attempt: int) -> RunLedger:
        data_path, meta_path = self.paths(task_id, attempt)
        try:
            held = data_path.stat().st_size
        except FileNotFoundError:
            held = 0
        ledger = RunLedger(self.max_bytes, held=min(held, self.max_bytes), accepted=held)
        try:
            meta = json.loads(meta_path.read_bytes())
        except (FileNotFoundError, ValueError):
            return ledger
        if isinstance(meta, dict):
            accepted = meta.get("accepted")
            if isinstance(accepted, int) and accepted >= ledger.held:
                ledger.accepted = accepted
            ledger.final = meta.get("final") is True
        return ledger

    # -- writing ----------------------------------------------------------------------------

    async def append(
        self, task_id: str, attempt: int, offset: int, data: bytes, final: bool
    ) -> AppendPlan:
        """Apply one chunk; the plan says what was kept and the next offset. The change is
        written (and, when final, fsynced) before this returns. ``OutputUnavailable``
        when the disk refused it: nothing of it counts."""
        async with self._using(task_id, attempt) as run:
            plan = run.ledger.plan(offset, len(data), final)
            if plan.accepted and plan.changes:
                piece = data[plan.skip : plan.skip + plan.store]
                capped_now = plan.dropped > 0 and not run.ledger.truncated
                meta: dict[str, object] | None = None
                if plan.final or capped_now:
                    meta = {"final": plan.final, "accepted": plan.next_offset}
                await self._run_in_pool(lambda: self._write(task_id, attempt, plan, piece, meta))
                run.ledger.apply(plan)
                self.bytes_written += plan.store
                self.bytes_dropped += plan.dropped
                self._notify(task_id)
            return plan

    def _write(
        self,
        task_id: str,
        attempt: int,
        plan: AppendPlan,
        piece: bytes,
        meta: dict[str, object] | None,
    ) -> None:
        data_path, meta_path = self.paths(task_id, attempt)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_path, os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            written = 0
            while written < len(piece):
                written += os.pwrite(fd, piece[written:], plan.write_at + written)
            if meta is not None:
                os.fsync(fd)
        finally:
            os.close(fd)
        if meta is not None:
            tmp = meta_path.with_suffix(".json.tmp")
            with open(tmp, "wb") as handle:
                handle.write(json.dumps(meta).encode())
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(meta_path)

    # -- reading ----------------------------------------------------------------------------

    async def read(
        self, task_id: str, attempt: int, offset: int, limit: int
    ) -> tuple[bytes, RunSnapshot]:
        """Up to ``limit`` bytes held from ``offset`` (fewer at the end of what is held),
        and the run's state when they were read; ``OutputDeleted`` once pruned."""
        async with self._using(task_id, attempt) as run:
            snapshot = run.snapshot()
            count = max(0, min(limit, snapshot.held - offset))
        if snapshot.held == 0:  # nothing held: never streamed, or deleted
            pruned = await asyncio.to_thread(self.pruned_at, task_id)
            if pruned is not None:
                raise OutputDeleted(
                    f"the output of task {task_id!r} was deleted at "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(pruned))} UTC, past "
                    "the master's task_output_retention; its logs keep the last part"
                )
        if count == 0:
            return b"", snapshot
        data_path, _ = self.paths(task_id, attempt)

        def pread() -> bytes:
            with open(data_path, "rb") as handle:
                return os.pread(handle.fileno(), count, offset)

        try:
            data = await asyncio.to_thread(pread)
        except OSError as exc:
            raise OutputUnavailable(f"task output storage: {exc.strerror or exc}") from None
        return data, snapshot

    # -- retention --------------------------------------------------------------------------

    def pruned_at(self, task_id: str) -> float | None:
        """When the task's output was deleted (Unix time), None if it was not."""
        try:
            meta = json.loads((self.root / task_id / PRUNED).read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        at = meta.get("pruned_at") if isinstance(meta, dict) else None
        return float(at) if isinstance(at, int | float) else 0.0

    def folders(self) -> list[str]:
        """The task ids with an output folder that still holds runs (blocking)."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        return [e.name for e in entries if e.is_dir() and not (Path(e.path) / PRUNED).exists()]

    def forget(self, task_id: str) -> None:
        """Drop what memory holds of the task's runs: the next use reads the disk (on the
        event loop, after ``delete``)."""
        for key in [key for key in self._runs if key[0] == task_id]:
            run = self._runs[key]
            run.ledger = RunLedger(self.max_bytes, held=-1)  # reloaded at its next use
            if run.users == 0:
                del self._runs[key]
        self._notify(task_id)

    def delete(self, task_id: str, now: float) -> int:
        """Delete the task's runs, leaving ``pruned.json`` (blocking); the bytes freed."""
        folder = self.root / task_id
        freed = 0
        for path in folder.iterdir():
            if path.name == PRUNED:
                continue
            freed += path.stat().st_size
            path.unlink()
        tmp = folder / (PRUNED + ".tmp")
        tmp.write_text(json.dumps({"pruned_at": now}))
        tmp.replace(folder / PRUNED)
        return freed

    # -- waiting ----------------------------------------------------------------------------

    def changed_event(self, task_id: str) -> asyncio.Event:
        """An event set at the next change of ``task_id``'s output or task (take it before
        looking at the state, then wait on it)."""
        event = self._changed.get(task_id)
        if event is None:
            event = self._changed[task_id] = asyncio.Event()
        return event

    def _notify(self, task_id: str) -> None:
        event = self._changed.pop(task_id, None)
        if event is not None:
            event.set()

    def task_changed(self, task_id: str) -> None:
        """The task changed (a result, a retry): wake whoever waits on its output."""
        self._notify(task_id)
