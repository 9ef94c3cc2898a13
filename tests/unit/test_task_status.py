from __future__ import annotations

import pytest

from cloudai.task_status import RESULT_STATUSES, TERMINAL_STATUSES, TaskStatus


def test_values_are_the_strings_of_the_api_and_the_store() -> None:
    assert [s.value for s in TaskStatus] == [
        "queued", "assigned", "running", "success", "failure", "cancelled", "rejected", "lost",
        "timed_out",
    ]  # fmt: skip
    assert TaskStatus.SUCCESS == "success" and f"{TaskStatus.RUNNING}" == "running"


def test_finished_and_result_sets() -> None:
    assert {s for s in TaskStatus if s.finished} == TERMINAL_STATUSES
    assert RESULT_STATUSES < TERMINAL_STATUSES
    assert TaskStatus.REJECTED not in RESULT_STATUSES


def test_parse_names_the_valid_values() -> None:
    assert TaskStatus.parse(" Running ") is TaskStatus.RUNNING
    with pytest.raises(ValueError, match=r"unknown task status 'bogus' \(one of: queued, "):
        TaskStatus.parse("bogus")
