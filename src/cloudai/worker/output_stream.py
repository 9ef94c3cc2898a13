"""Live task output: the worker streams each task run's output to the master while it
runs (AppendTaskOutput; docs/TASK_OUTPUT.md).

Per run, a tap on the runtime's output log (``runtimes/logs.py``) appends every byte to
``<task_dir>/output-<attempt>.stream`` (at most ``max_bytes``); a sender sends what the
master does not hold yet, in chunks of at most 1 MiB: as soon as 64 KiB are pending,
else at most every 0.25 s, and a last chunk marked ``final`` when the run ended. The
master answers how much it holds (``next_offset``), and the sender goes on from there,
back or forth: a chunk it lost is sent again, one it holds is not. While the master is
unreachable the bytes wait on disk and are sent when it is back; the file is deleted
once the master acknowledged the final chunk. Before a run's result is delivered, its
output is flushed (``flush``), so the master has the output before the result.

After a worker restart, the runs the earlier process did not finish sending (its task
was interrupted, or its result still waits for delivery) are resumed (``resume``): the
sender first asks the master how much it holds (an empty chunk at offset 0), then sends
the rest of the ``.stream`` file, marked final, before the run's result goes.

A master without AppendTaskOutput (the Go master: UNIMPLEMENTED) or one that refuses
the run gets nothing more of it; the result's logs still carry the tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from cloudai.backoff import Backoff
from cloudai.proto import pb
from cloudai.worker.runtimes.base import TaskSpec
from cloudai.worker.runtimes.logs import output_tap, set_output_tap

log = logging.getLogger(__name__)

KIB = 1024
MIB = 1024 * KIB
SEND_INTERVAL = 0.25
"""At most one chunk per run this often, unless SEND_THRESHOLD bytes are pending."""
SEND_THRESHOLD = 64 * KIB
MAX_CHUNK = MIB
"""The largest chunk sent (the master takes at most 1 MiB per message)."""
DEFAULT_MAX_BYTES = 64 * MIB
FLUSH_TIMEOUT = 10.0
"""The longest a result waits for its run's output to reach the master."""
RETRY_MAX = 2.0
"""The longest wait between two tries while the master is unreachable."""

Send = Callable[[pb.TaskOutput], Awaitable[pb.TaskOutputAck]]
"""One AppendTaskOutput; raises grpc.aio.AioRpcError, or ConnectionError while no master
is registered."""

_GIVE_UP_CODES = frozenset(
    {
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


# -- the chunker (pure) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    length: int
    final: bool


def next_chunk(position: int, available: int, total: int, ended: bool) -> Chunk | None:
    """The next chunk to send: ``position`` is what the master holds, ``available`` the
    bytes on disk, ``total`` the bytes the run wrote (more than ``available`` past the
    cap), ``ended`` whether it ended. None: nothing to send now."""
    if position < available:
        length = min(available - position, MAX_CHUNK)
        return Chunk(position, length, ended and position + length == total)
    if ended:
        return Chunk(max(position, total), 0, True)  # the end (past the cap: the total)
    return None


PROBE = Chunk(0, 0, False)
"""The first message of a resumed run: nothing to store; the answer's ``next_offset``
says how much of the run's output the master holds."""


def send_delay(pending: int, since_last: float, ended: bool) -> float:
    """Seconds to wait before sending ``pending`` bytes (0: now)."""
    if ended or pending >= SEND_THRESHOLD:
        return 0.0
    return max(0.0, SEND_INTERVAL - since_last)


# -- one run ----------------------------------------------------------------------------------


class RunStream:
    """One task run's output on its way to the master."""

    def __init__(
        self,
        spec: TaskSpec,
        task_dir: Path,
        max_bytes: int,
        loop: asyncio.AbstractEventLoop,
        *,
        resume: bool = False,
    ) -> None:
        """``resume``: the run ended in an earlier process of this worker; its file is
        read as it is (up to ``max_bytes``), nothing is added to it, and the master is
        asked first how much it holds."""
        self.task_id = spec.task_id
        self.attempt = spec.attempt
        self.path = stream_path(task_dir, spec.attempt)
        self.log_path = task_dir / "output.log"
        self.max_bytes = max_bytes
        self._loop = loop
        self._lock = threading.Lock()
        fd = _open_resumed(self.path) if resume else _open_new(self.path)
        self._fd: int | None = fd
        self.available = 0  # bytes on disk
        self.total = 0  # bytes the run wrote
        self.ended = resume
        self.probing = resume  # the master's offset is not known yet: ask it first
        if resume:
            self.available = self.total = min(os.fstat(fd).st_size, max_bytes)
        self.position = 0  # what the master holds (its last next_offset)
        self.wake = asyncio.Event()  # new output, or the run ended
        self.hurry = asyncio.Event()  # a result waits: try again now
        self.done = asyncio.Event()  # final acknowledged, or given up

    def tap(self, data: bytes) -> None:
        """From the thread that writes the output: append it (up to the cap), wake the
        sender."""
        with self._lock:
            if self._fd is None:
                return
            self.total += len(data)
            room = self.max_bytes - self.available
            if room > 0:
                piece = data[:room]
                try:
                    os.write(self._fd, piece)
                except OSError as exc:  # a full disk: the result's tail still has it
                    log.warning("task %s: live output stopped: %s", self.task_id, exc)
                    self._close_locked()
                    return
                self.available += len(piece)
        with contextlib.suppress(RuntimeError):  # the loop closed: the worker is stopping
            self._loop.call_soon_threadsafe(self.wake.set)

    def end(self) -> None:
        with self._lock:
            self.ended = True
        self.wake.set()

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            if self._fd is None:
                return b""
            return os.pread(self._fd, length, offset)

    def _close_locked(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def discard(self) -> None:
        """Stop taking output and delete the file (the master has it, or never will)."""
        with self._lock:
            self._close_locked()
        with contextlib.suppress(OSError):
            self.path.unlink()

    @property
    def closed(self) -> bool:
        return self._fd is None


def stream_path(task_dir: Path, attempt: int) -> Path:
    """Where a run's whole output waits until the master holds it."""
    return task_dir / f"output-{max(attempt, 0)}.stream"


def _open_new(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)


def _open_resumed(path: Path) -> int:
    """The file of a run to resume, for reading: a regular file, never what a link
    points to (the task may write in its directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
    except OSError:
        os.close(fd)
        raise
    return fd


def _untap(run: RunStream) -> None:
    """Remove the run's tap (not a later run's, on the same log)."""
    if output_tap(run.log_path) == run.tap:
        set_output_tap(run.log_path, None)


# -- every run ----------------------------------------------------------------------------------


class OutputStreams:
    def __init__(
        self,
        worker_id: str,
        send: Send,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.worker_id = worker_id
        self._send = send
        self.max_bytes = max_bytes
        self._clock = clock
        self._runs: dict[tuple[str, int], RunStream] = {}  # (task id, attempt) -> run
        self._senders: set[asyncio.Task[None]] = set()
        self.chunks_sent = 0
        self.bytes_sent = 0
        self._warned: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def begin(self, spec: TaskSpec, task_dir: Path) -> None:
        """A run starts: tap its output log and start its sender. Call before the runtime
        opens the log."""
        if not self.enabled:
            return
        old = self._runs.pop((spec.task_id, spec.attempt), None)
        if old is not None:  # the same run again (a master that does not number runs)
            old.discard()  # before the new file is made: it has the same name
            old.done.set()
        try:
            run = RunStream(spec, task_dir, self.max_bytes, asyncio.get_running_loop())
        except OSError as exc:
            log.warning("task %s: no live output (%s)", spec.task_id, exc)
            return
        set_output_tap(run.log_path, run.tap)
        self._start(run)

    def resume(self, task_id: str, attempt: int, task_dir: Path) -> bool:
        """At start-up: run ``attempt`` of ``task_id`` ended in an earlier process of this
        worker before the master held its whole output. Send the rest of its file,
        marked final (what the master does not hold yet); ``flush`` waits for it as for
        a live run. False when the file cannot be read (it is deleted where possible).

        Done also when live output is off now: the file is from when it was on."""
        cap = self.max_bytes if self.enabled else DEFAULT_MAX_BYTES
        spec = TaskSpec(task_id, attempt=attempt)
        try:
            run = RunStream(spec, task_dir, cap, asyncio.get_running_loop(), resume=True)
        except OSError as exc:
            log.warning("task %s: live output not resumed (%s)", task_id, exc)
            with contextlib.suppress(OSError):
                stream_path(task_dir, attempt).unlink()
            return False
        self._start(run)
        return True

    def _start(self, run: RunStream) -> None:
        self._runs[run.task_id, run.attempt] = run
        sender = asyncio.get_running_loop().create_task(
            self._sender(run), name=f"output-{run.task_id}"
        )
        self._senders.add(sender)
        sender.add_done_callback(self._senders.discard)

    def end(self, spec: TaskSpec) -> None:
        """The run ended and its output is all written: send the rest, marked final."""
        run = self._runs.get((spec.task_id, spec.attempt))
        if run is None:
            return
        _untap(run)
        if run.done.is_set():  # given up earlier
            del self._runs[spec.task_id, spec.attempt]
            run.discard()
            return
        run.end()

    async def flush(self, task_id: str, attempt: int, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the master holds the run's whole output. A
        sender waiting to try again tries at once (the master answered just now)."""
        run = self._runs.get((task_id, attempt))
        if run is None or run.done.is_set():
            return
        run.hurry.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.done.wait(), timeout)

    async def before_result(self, result: pb.TaskResult) -> None:
        """``MasterClient.before_result``: the run's output goes first (within 10 s)."""
        await self.flush(result.task_id, result.attempt, FLUSH_TIMEOUT)

    async def close(self) -> None:
        for sender in list(self._senders):
            sender.cancel()
        for sender in list(self._senders):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
        for run in self._runs.values():
            _untap(run)
            with run._lock:
                run._close_locked()  # the file stays: the output was not all delivered
        self._runs.clear()

    # -- the sender -------------------------------------------------------------------------

    def _finish(self, run: RunStream) -> None:
        run.discard()
        run.done.set()
        if self._runs.get((run.task_id, run.attempt)) is run:
            del self._runs[run.task_id, run.attempt]
            _untap(run)

    def _give_up(self, run: RunStream, why: str, level: int = logging.WARNING) -> None:
        key = why.split(":")[0]
        if key not in self._warned:
            self._warned.add(key)
            log.log(level, "task %s: live output not sent: %s", run.task_id, why)
        else:
            log.debug("task %s: live output not sent: %s", run.task_id, why)
        if run.ended:
            self._finish(run)
        else:  # keep the entry until the run ends; take no more output
            with run._lock:
                run._close_locked()
            with contextlib.suppress(OSError):
                run.path.unlink()
            run.done.set()

    async def _sender(self, run: RunStream) -> None:
        backoff = Backoff(0.25, RETRY_MAX)
        last_sent = -math.inf
        while not run.done.is_set():
            run.wake.clear()
            with run._lock:
                available, total, ended = run.available, run.total, run.ended
            if run.probing:
                chunk: Chunk | None = PROBE
            else:
                chunk = next_chunk(run.position, available, total, ended)
            if chunk is None:
                await run.wake.wait()
                continue
            delay = send_delay(chunk.length, self._clock() - last_sent, ended)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.wake.wait(), delay)
                continue
            if chunk.length > SEND_THRESHOLD:
                data = await asyncio.to_thread(run.read, chunk.offset, chunk.length)
            else:
                data = run.read(chunk.offset, chunk.length)
            if len(data) != chunk.length:  # the file was closed (given up, or shut down)
                return
            message = pb.TaskOutput(
                task_id=run.task_id,
                worker_id=self.worker_id,
                attempt=run.attempt,
                offset=chunk.offset,
                data=data,
                final=chunk.final,
            )
            last_sent = self._clock()
            try:
                ack = await self._send(message)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _GIVE_UP_CODES:
                    quiet = exc.code() == grpc.StatusCode.UNIMPLEMENTED
                    why = f"the master does not take it ({exc.code().name}: {exc.details()})"
                    self._give_up(run, why, logging.INFO if quiet else logging.WARNING)
                    return
                await self._retry_later(run, backoff)
                continue
            except (ConnectionError, OSError):
                await self._retry_later(run, backoff)
                continue
            backoff.reset()
            if self._settle(run, chunk, ack):
                return

    def _settle(self, run: RunStream, chunk: Chunk, ack: pb.TaskOutputAck) -> bool:
        """Take the master's answer; True when this run's stream is over."""
        if ack.success:
            self.chunks_sent += 1
            self.bytes_sent += chunk.length
            run.position = ack.next_offset
            run.probing = False
            if chunk.final and ack.next_offset >= chunk.offset + chunk.length:
                self._finish(run)
                return True
            return False
        if ack.next_offset < chunk.offset:  # a gap: the master holds less; resend from there
            run.position = ack.next_offset
            if run.position >= run.available and run.position < run.total:
                self._give_up(run, "the master holds less than this worker kept (its cap)")
                return True
            return False
        self._give_up(run, f"the master refused it: {ack.message}")
        return True

    async def _retry_later(self, run: RunStream, backoff: Backoff) -> None:
        """Wait before the next try: the back-off, or less when ``flush`` asks."""
        run.hurry.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.hurry.wait(), backoff.next_delay())
