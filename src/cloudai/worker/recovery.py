"""Tasks interrupted by a worker crash: found at the next start and reported.

While a task runs, its directory holds ``task.json`` (the spec and, once started, what
identifies its processes or container). It is removed only after the task's result is
in the spool. A marker found at start-up means the worker died while the task ran:
leftovers are stopped (the worker can no longer observe or account for them) and a
"failure" result with the output collected so far is spooled, so the master hears how
the task ended instead of waiting for it forever.

The live output of a run (``output-<attempt>.stream``, docs/TASK_OUTPUT.md) that the
earlier process did not finish sending is resumed when the worker still holds a record
of the run: the marker of an interrupted task, or a result waiting for delivery. The
rest go: their result was delivered, so the master no longer waits for their output.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudai.proto import pb
from cloudai.worker.runtimes.logs import render_logs

log = logging.getLogger(__name__)

MARKER = "task.json"
INTERRUPTED_EXIT_CODE = -1
_STREAM_NAME = re.compile(r"output-(\d{1,10})\.stream")


def write_marker(task_dir: Path, data: dict[str, Any]) -> None:
    task_dir.mkdir(parents=True, exist_ok=True)
    tmp = task_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, task_dir / MARKER)


def remove_marker(task_dir: Path) -> None:
    (task_dir / MARKER).unlink(missing_ok=True)


def find_interrupted(tasks_dir: Path) -> list[dict[str, Any]]:
    """Markers left by tasks that were running when the worker stopped."""
    found = []
    for path in sorted(tasks_dir.glob(f"*/{MARKER}")):
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("task_id") != path.parent.name:
                raise ValueError("not a task marker")
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable task marker %s: %s", path, exc)
            continue
        found.append(data)
    return found


def read_tail(path: Path, limit: int) -> tuple[bytes, int]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return b"", 0
    # The file may hold more than was ever dropped (it is compacted lazily): the count of
    # dropped bytes is at least what precedes the tail in the file.
    return data, size - len(data)


def interrupted_result(
    worker_id: str, marker: dict[str, Any], task_dir: Path, max_log_bytes: int
) -> pb.TaskResult:
    tail, dropped = read_tail(task_dir / "output.log", max_log_bytes)
    logs, truncated = render_logs(
        tail,
        dropped,
        "the worker stopped while the task was running; what was left of the task was"
        " stopped when the worker started again",
    )
    return pb.TaskResult(
        task_id=str(marker["task_id"]),
        worker_id=worker_id,
        status="failure",
        logs=logs,
        result_location=str(task_dir),
        exit_code=INTERRUPTED_EXIT_CODE,
        logs_truncated=truncated,
        attempt=marker_attempt(marker),
    )


def marker_attempt(marker: dict[str, Any]) -> int:
    """Task.attempt as the marker kept it (0 in markers of an earlier version)."""
    value = marker.get("attempt", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True, slots=True)
class StreamFile:
    """A run's live output left on disk: ``<tasks>/<task_id>/output-<attempt>.stream``."""

    task_id: str
    attempt: int  # from the name: the run's attempt, 0 for attempts <= 0
    path: Path


def find_streams(tasks_dir: Path) -> list[StreamFile]:
    """Every live output file under ``tasks_dir``, named as the worker names them."""
    found = []
    for path in sorted(tasks_dir.glob("*/output-*.stream")):
        match = _STREAM_NAME.fullmatch(path.name)
        if match is not None:
            found.append(StreamFile(path.parent.name, int(match.group(1)), path))
    return found


def streams_to_resume(
    streams: Iterable[StreamFile], runs: Iterable[tuple[str, int]]
) -> tuple[list[tuple[StreamFile, int]], list[StreamFile]]:
    """Split ``streams`` by the runs this worker holds a record of (task id, attempt):
    those to resume, each with its run's attempt, and those to delete (no such run)."""
    attempts = {(task_id, max(attempt, 0)): attempt for task_id, attempt in runs}
    resume, orphans = [], []
    for stream in streams:
        attempt = attempts.get((stream.task_id, stream.attempt))
        if attempt is None:
            orphans.append(stream)
        else:
            resume.append((stream, attempt))
    return resume, orphans
