"""Finished task results kept on disk until the master acknowledged them.

Each result is one file ``<task_id>.result`` (the serialised pb.TaskResult), written
atomically (temporary file, fsync, rename, fsync of the directory) before any attempt
to deliver it, and deleted only after the master acked ReportTaskCompletion. A new
spool on the same directory (after a worker restart) finds every pending result.
A result the master rejects for good is moved to ``rejected/`` rather than deleted.
If the disk refuses the write (full, read-only), the result is kept in memory and
still delivered: it is lost only if the worker also dies before delivering it.

Blocking file I/O: the async callers run these methods with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from google.protobuf.message import DecodeError

from cloudai.proto import pb
from cloudai.validation import check_id

log = logging.getLogger(__name__)

SUFFIX = ".result"


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ResultSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rejected_dir = directory / "rejected"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._in_memory: dict[str, pb.TaskResult] = {}
        for stale in self.directory.glob("*.tmp"):  # a write interrupted by a crash
            stale.unlink(missing_ok=True)

    def _path(self, task_id: str) -> Path:
        check_id("task_id", task_id)  # also keeps the name inside the directory
        return self.directory / f"{task_id}{SUFFIX}"

    def put(self, result: pb.TaskResult) -> Path:
        """Store ``result`` durably (replacing an older one of the same task)."""
        path = self._path(result.task_id)
        tmp = path.with_name(path.name + ".tmp")
        data = result.SerializeToString()
        with self._lock:
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except OSError as exc:
                log.error(
                    "cannot store the result of task %s (%s): kept in memory", result.task_id, exc
                )
                tmp.unlink(missing_ok=True)
                self._in_memory[result.task_id] = result
                return path
            self._in_memory.pop(result.task_id, None)
            _fsync_dir(self.directory)
        return path

    def contains(self, task_id: str) -> bool:
        return task_id in self._in_memory or self._path(task_id).exists()

    def attempt(self, task_id: str) -> int | None:
        """The attempt of the task's stored result (0 from a master that does not count
        attempts); None when none is stored."""
        with self._lock:
            return self._attempt(task_id)

    def _attempt(self, task_id: str) -> int | None:
        if task_id in self._in_memory:
            return self._in_memory[task_id].attempt
        try:
            return pb.TaskResult.FromString(self._path(task_id).read_bytes()).attempt
        except FileNotFoundError:
            return None
        except DecodeError:
            return 0

    def pending(self) -> list[pb.TaskResult]:
        """Every stored result, oldest first."""
        with self._lock:
            entries = []
            for path in self.directory.glob(f"*{SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    entries.append((path.stat().st_mtime_ns, path.name, path))
            results = []
            for _, _, path in sorted(entries):
                try:
                    result = pb.TaskResult.FromString(path.read_bytes())
                except FileNotFoundError:
                    continue
                except DecodeError:
                    log.error("unreadable result file %s: moved to %s", path, self.rejected_dir)
                    self._move_to_rejected(path)
                    continue
                results.append(result)
            on_disk = {r.task_id for r in results}
            results.extend(r for t, r in self._in_memory.items() if t not in on_disk)
            return results

    def remove(self, task_id: str, attempt: int | None = None) -> None:
        """The master acknowledged the result: forget it. ``attempt``: only if the stored
        result is of that attempt (a later run of the task may have replaced it)."""
        with self._lock:
            if attempt is not None and self._attempt(task_id) not in (None, attempt):
                return
            self._in_memory.pop(task_id, None)
            self._path(task_id).unlink(missing_ok=True)
            _fsync_dir(self.directory)

    def reject(self, task_id: str) -> None:
        """The master refused the result for good: keep it aside, stop delivering it."""
        with self._lock:
            self._in_memory.pop(task_id, None)
            path = self._path(task_id)
            if path.exists():
                self._move_to_rejected(path)

    def _move_to_rejected(self, path: Path) -> None:
        self.rejected_dir.mkdir(exist_ok=True)
        os.replace(path, self.rejected_dir / path.name)

    def __len__(self) -> int:
        names = {p.name[: -len(SUFFIX)] for p in self.directory.glob(f"*{SUFFIX}")}
        return len(names | set(self._in_memory))
