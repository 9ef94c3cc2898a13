"""`cloudai logs TASK [-f] [--output FILE] [--attempt N]`: a task's output from the master.

The whole output the master holds (``GET /api/tasks/{task_id}/output``, in ranges),
byte for byte, to stdout or to a file; with ``-f`` it follows the task until it ends
(each request long-polls, so new output shows within a fraction of a second), across
its retries unless ``--attempt`` pins one run. When the master holds no output of the
task (its worker does not stream: a Go worker; or a master from before live output),
the task's logs (the tail its worker reported) are shown instead, as before. The status
line (status, exit code) goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from cloudai.api.models import TaskLogs, TaskWithLogs
from cloudai.cli.api_client import ApiError, OutputChunk
from cloudai.settings import SettingsError

MIB = 1024 * 1024
READ_LIMIT = 8 * MIB
"""Bytes asked for per request."""
FOLLOW_WAIT = 10.0
"""Seconds each follow request may wait on the master for new bytes."""
RESULT_POLL = 0.1
"""Following, once a run's output is complete: how often to ask whether the task ended
or runs again."""


class OutputApi(Protocol):
    def output(
        self,
        task_id: str,
        offset: int = 0,
        limit: int | None = None,
        attempt: int | None = None,
        wait: float = 0.0,
    ) -> OutputChunk: ...

    def task(self, task_id: str) -> TaskWithLogs: ...

    def logs(self, task_id: str) -> TaskLogs: ...


class NoOutputEndpoint(Exception):
    """The master has no output endpoint (it predates live output)."""


@dataclass(slots=True)
class Copied:
    """What ``copy_output`` wrote."""

    bytes: int = 0
    runs: int = 0
    truncated: bool = False  # the master kept only the first part of a run's output
    last_attempt: int = 0


def _chunk(
    api: OutputApi, task_id: str, offset: int, attempt: int | None, wait: float
) -> OutputChunk:
    try:
        return api.output(task_id, offset, READ_LIMIT, attempt, wait)
    except ApiError as exc:
        if exc.status == 404 and exc.message.startswith("no such endpoint"):
            raise NoOutputEndpoint(exc.message) from None
        raise


def copy_run(
    api: OutputApi, task_id: str, sink: BinaryIO, attempt: int | None, follow: bool
) -> tuple[int, OutputChunk]:
    """Write one run's output held by the master to ``sink`` (following it: until it is
    complete); the bytes written and the last answer."""
    offset = written = 0
    while True:
        chunk = _chunk(api, task_id, offset, attempt, FOLLOW_WAIT if follow else 0.0)
        attempt = chunk.attempt
        if chunk.data:
            sink.write(chunk.data)
            if follow:
                sink.flush()
            written += len(chunk.data)
        offset = chunk.next_offset
        if offset < chunk.size:
            continue
        if not follow or chunk.complete:
            return written, chunk


def copy_output(
    api: OutputApi,
    task_id: str,
    sink: BinaryIO,
    attempt: int | None = None,
    follow: bool = False,
    announce: Callable[[str], None] = lambda _line: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Copied:
    """The task's output (one run: ``attempt``, else the current or last one) to ``sink``.
    ``follow``: until the task ends, and through its next runs unless ``attempt`` is
    given (``announce`` is told when a new run starts)."""
    copied = Copied()
    run = attempt
    while True:
        written, last = copy_run(api, task_id, sink, run, follow)
        copied.bytes += written
        copied.runs += 1
        copied.truncated = copied.truncated or last.truncated
        copied.last_attempt = last.attempt
        if not follow:
            return copied
        run = _next_run(api, task_id, last.attempt, sleep)
        if run is None or attempt is not None:
            return copied
        announce(f"task {task_id}: attempt {run} follows")


def _next_run(
    api: OutputApi, task_id: str, attempt: int, sleep: Callable[[float], None]
) -> int | None:
    """Once run ``attempt``'s output is complete: the next run's number when the task
    runs again, None once it ended."""
    while True:
        task = api.task(task_id)
        if task.attempt > attempt:
            return task.attempt
        if task.status.finished:
            return None
        sleep(RESULT_POLL)  # the output came first; the result is on its way


# -- the command --------------------------------------------------------------------------------

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3  # as cli/admin.py's


def status_line(logs: TaskLogs) -> str:
    line = f"task {logs.task_id}: {logs.status}"
    if logs.exit_code is not None:
        line += f", exit code {logs.exit_code}"
    return line


def _stderr(line: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run_output(
    args: argparse.Namespace,
    make_client: Callable[[argparse.Namespace], OutputApi],
    print_error: Callable[[str], None],
) -> int | None:
    """``cloudai logs`` with live output: the exit status, or None when the master holds
    no output of the task and the caller should show its logs as before (stdout only)."""
    target: Path | None = args.output_file
    try:
        api = make_client(args)
    except SettingsError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    try:
        sink: BinaryIO = open(target, "wb") if target is not None else sys.stdout.buffer  # noqa: SIM115
    except OSError as exc:
        print_error(f"cannot write {target}: {exc.strerror or exc}")
        return EXIT_USAGE
    try:
        copied = copy_output(api, args.task_id, sink, args.attempt, args.follow, _stderr)
        sink.flush()
        logs = api.logs(args.task_id)
    except NoOutputEndpoint:
        if target is None:
            return None
        print_error(
            "this master keeps no task output (it predates live output): see 'cloudai logs'"
        )
        return EXIT_REFUSED
    except ApiError as exc:
        print_error(exc.message)
        return EXIT_UNREACHABLE if exc.unreachable else EXIT_REFUSED
    except OSError as exc:
        print_error(f"cannot write {target or 'stdout'}: {exc.strerror or exc}")
        return EXIT_REFUSED
    finally:
        if target is not None:
            sink.close()
    if copied.bytes == 0 and target is None:
        return None  # nothing held (a worker that does not stream): the logs, as before
    line = status_line(logs)
    if target is not None:
        line += f"; {copied.bytes} bytes written to {target}"
    if copied.truncated:
        line += (
            "; the master kept only the first part of the output (see its "
            "--task-output-max-mib); the task's logs hold the last part (cloudai logs --json)"
        )
    elif copied.bytes == 0:
        line += (
            "; the master holds no live output of this task ('cloudai logs TASK' shows its logs)"
        )
    _stderr(line)
    return 0
