"""`cloudai logs` with live output (cli/task_output.py) against a fake API: the whole
output in ranges, following until the run is complete and the task ended, through
retries, and the fallback for a master without the endpoint."""

from __future__ import annotations

import io

import pytest

from cloudai.api.models import TaskLogs, TaskWithLogs
from cloudai.cli.api_client import ApiError, OutputChunk
from cloudai.cli.task_output import NoOutputEndpoint, copy_output
from cloudai.task_status import TaskStatus


class FakeApi:
    """Runs of a task whose output grows by one piece per request."""

    def __init__(self, runs: dict[int, list[bytes]], statuses: list[tuple[int, TaskStatus]]):
        self.runs = runs  # attempt -> the pieces that appear, one per request
        self.shown = {attempt: 0 for attempt in runs}  # pieces visible so far
        self.statuses = statuses  # (attempt, status) answered by task(), in order
        self.requests: list[tuple[int, int | None, float]] = []

    def output(
        self,
        task_id: str,
        offset: int = 0,
        limit: int | None = None,
        attempt: int | None = None,
        wait: float = 0.0,
    ) -> OutputChunk:
        self.requests.append((offset, attempt, wait))
        run = attempt if attempt is not None else max(self.runs)
        pieces = self.runs[run]
        if wait and self.shown[run] < len(pieces):
            self.shown[run] += 1  # something new came while we waited
        elif not wait:
            self.shown[run] = len(pieces)
        held = b"".join(pieces[: self.shown[run]])
        data = held[offset : offset + (limit or len(held))]
        return OutputChunk(
            data=data,
            size=len(held),
            complete=self.shown[run] == len(pieces),
            next_offset=offset + len(data),
            attempt=run,
            truncated=False,
        )

    def task(self, task_id: str) -> TaskWithLogs:
        attempt, status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return TaskWithLogs(
            task_id=task_id,
            worker_id="w1",
            status=status,
            attempt=attempt,
            retries=1,
            submitted_at=0.0,
        )

    def logs(self, task_id: str) -> TaskLogs:
        return TaskLogs(task_id=task_id, status=TaskStatus.SUCCESS, time=0.0)


def test_the_whole_output_in_ranges() -> None:
    api = FakeApi({1: [b"a" * 10, b"b" * 5]}, [(1, TaskStatus.SUCCESS)])
    sink = io.BytesIO()
    copied = copy_output(api, "t1", sink)
    assert sink.getvalue() == b"a" * 10 + b"b" * 5
    assert (copied.bytes, copied.runs, copied.last_attempt) == (15, 1, 1)
    assert all(wait == 0 for _o, _a, wait in api.requests)


def test_follow_until_the_run_is_complete_and_the_task_ended() -> None:
    api = FakeApi(
        {1: [b"one\n", b"two\n", b"three\n"]},
        [(1, TaskStatus.RUNNING), (1, TaskStatus.RUNNING), (1, TaskStatus.SUCCESS)],
    )
    sink = io.BytesIO()
    naps: list[float] = []
    copied = copy_output(api, "t1", sink, follow=True, sleep=naps.append)
    assert sink.getvalue() == b"one\ntwo\nthree\n" and copied.runs == 1
    assert [offset for offset, _a, _w in api.requests] == [0, 4, 8]
    assert len(naps) == 2  # the result came after the output: asked until it ended


def test_attempt_pins_one_run() -> None:
    api = FakeApi({1: [b"first\n"], 2: [b"second\n"]}, [(2, TaskStatus.FAILURE)])
    sink = io.BytesIO()
    lines: list[str] = []
    copied = copy_output(api, "t1", sink, attempt=1, follow=True, announce=lines.append)
    assert sink.getvalue() == b"first\n" and copied.runs == 1 and not lines


def test_follow_through_a_retry() -> None:
    api = FakeApi(
        {1: [b"first\n"], 2: [b"second\n"]}, [(2, TaskStatus.RUNNING), (2, TaskStatus.SUCCESS)]
    )
    original = api.output
    calls = {"n": 0}

    def output(task_id: str, offset: int = 0, limit: int | None = None,
               attempt: int | None = None, wait: float = 0.0) -> OutputChunk:  # fmt: skip
        calls["n"] += 1
        return original(
            task_id, offset, limit, 1 if attempt is None and calls["n"] == 1 else attempt, wait
        )

    api.output = output  # type: ignore[method-assign]
    sink = io.BytesIO()
    lines: list[str] = []
    copied = copy_output(api, "t1", sink, follow=True, announce=lines.append, sleep=lambda _s: None)
    assert sink.getvalue() == b"first\nsecond\n"
    assert copied.runs == 2 and lines == ["task t1: attempt 2 follows"]


def test_a_master_without_the_endpoint() -> None:
    class OldMaster(FakeApi):
        def output(self, *args: object, **kwargs: object) -> OutputChunk:
            raise ApiError("no such endpoint: GET /api/tasks/t1/output", 404)

    with pytest.raises(NoOutputEndpoint):
        copy_output(OldMaster({1: []}, [(1, TaskStatus.SUCCESS)]), "t1", io.BytesIO())


def test_an_unknown_task_is_an_error() -> None:
    class NoTask(FakeApi):
        def output(self, *args: object, **kwargs: object) -> OutputChunk:
            raise ApiError("unknown task 't9'", 404)

    with pytest.raises(ApiError, match="unknown task"):
        copy_output(NoTask({1: []}, [(1, TaskStatus.SUCCESS)]), "t9", io.BytesIO())
