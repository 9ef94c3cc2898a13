"""The API's models: what requests accept and refuse, and the JSON shapes of responses."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from cloudai import validation
from cloudai.api.models import (
    ID_PATTERN,
    MAX_ID_LENGTH,
    ClusterSummary,
    Task,
    TaskFilter,
    TaskLogs,
    TaskSubmission,
    TaskWithLogs,
    Worker,
    WorkerRegistration,
    check_id,
)
from cloudai.task_status import TaskStatus


def test_the_id_rule_is_the_protocols() -> None:
    assert ID_PATTERN == "^[A-Za-z0-9][A-Za-z0-9._:@-]*$" and MAX_ID_LENGTH == 128
    for bad in ("", "a b", "-a", "a/b", "x" * 129, "a\n"):
        with pytest.raises(ValueError) as ours:
            check_id("worker_id", bad)
        with pytest.raises(validation.InvalidMessage) as theirs:
            validation.check_id("worker_id", bad)
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"worker_id": "w1", "adress": "x:1"}, "extra_forbidden"),
        ({"worker_id": 7}, "string_type"),
        ({"worker_id": "bad/id"}, "value_error"),
        ({"worker_id": "w1", "address": "nowhere"}, "value_error"),
        ({"worker_id": "w1", "address": "h:65536"}, "value_error"),
        ({"address": "h:1"}, "missing"),
    ],
)
def test_registration_refuses(body: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        WorkerRegistration.model_validate_json(orjson.dumps(body))
    assert info.value.errors()[0]["type"] == problem


@pytest.mark.parametrize("address", ["", "10.0.0.7:50052", "node-1.lan:1", "[::1]:50052"])
def test_registration_accepts(address: str) -> None:
    body = orjson.dumps({"worker_id": "w1", "address": address})
    assert WorkerRegistration.model_validate_json(body).address == address


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"worker_id": "w1", "command": "x", "req_cpu": "2"}, "float_type"),  # strict
        ({"worker_id": "w1", "command": "x", "req_cpu": True}, "float_type"),
        ({"worker_id": "w1", "command": "x", "req_cpu": -1}, "greater_than_equal"),
        ({"worker_id": "w1", "command": 1}, "string_type"),
        ({"worker_id": "w1"}, "value_error"),  # nothing to run
        ({"worker_id": "w1", "command": "x", "task_id": "a b"}, "value_error"),
        ({"worker_id": "w1", "command": "x", "priority": 1}, "extra_forbidden"),
    ],
)
def test_submission_refuses(body: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        TaskSubmission.model_validate_json(orjson.dumps(body))
    assert info.value.errors()[0]["type"] == problem


def test_submission_defaults_and_integers() -> None:
    task = TaskSubmission.model_validate_json(b'{"worker_id": "w1", "command": "ls", "req_cpu": 2}')
    assert task.req_cpu == 2.0 and task.task_id == "" and task.docker_image == ""


def test_task_filter() -> None:
    assert TaskFilter.model_validate({}) == TaskFilter()
    query = TaskFilter.model_validate({"status": "running", "worker_id": "w1"})
    assert query.status is TaskStatus.RUNNING and query.worker_id == "w1"
    for bad in ({"status": "bogus"}, {"status": ""}, {"status": "RUNNING"}, {"worker_id": "a b"}):
        with pytest.raises(ValidationError):
            TaskFilter.model_validate(bad)


TASK = {
    "task_id": "t1",
    "worker_id": "w1",
    "docker_image": "ubuntu",
    "command": "ls",
    "req_cpu": 1.0,
    "req_memory": 2.0,
    "req_storage": 0.0,
    "req_gpu": 0.0,
    "status": "success",
    "message": "reported by w1",
    "submitted_at": 1.5,
    "started_at": 2.5,
    "finished_at": None,
    "exit_code": 0,
    "result_location": "",
}


TASK_ADDITIONS = {
    "time_limit": 0.0,
    "retries": 0,
    "attempt": 1,
    "attempts": [],
    "any_worker": False,
    "retry_at": None,
}
"""Fields added later, after the original ones: defaults for a task that has none."""


def test_response_shapes_are_the_apis() -> None:
    """Field names, order and JSON types as the API has always sent them (additions after)."""
    sent = orjson.loads(Task.model_validate(TASK).model_dump_json())
    assert sent == {**TASK, **TASK_ADDITIONS}
    assert list(sent) == [*TASK, *TASK_ADDITIONS]
    with_logs = TaskWithLogs.model_validate({**TASK, "logs": "hi\n", "logs_truncated": False})
    assert list(orjson.loads(with_logs.model_dump_json())) == [
        *TASK,
        *TASK_ADDITIONS,
        "logs",
        "logs_truncated",
    ]
    logs = TaskLogs(task_id="t1", status=TaskStatus.FAILURE, exit_code=3, logs="x", time=9.5)
    assert orjson.loads(logs.model_dump_json()) == {
        "task_id": "t1",
        "status": "failure",
        "exit_code": 3,
        "logs": "x",
        "logs_truncated": False,
        "time": 9.5,
    }
    worker = Worker(
        worker_id="w1",
        address="",
        registered=False,
        total_cpu=0,
        total_memory=0,
        total_storage=0,
        total_gpu=0,
    )
    assert list(orjson.loads(worker.model_dump_json())) == [
        "worker_id",
        "address",
        "registered",
        "total_cpu",
        "total_memory",
        "total_storage",
        "total_gpu",
        "is_active",
        "cpu_usage",
        "memory_usage",
        "storage_usage",
        "gpu_usage",
        "running_tasks",
        "last_update",
        *WORKER_ADDITIONS,
        "task_limits",  # how the worker enforces task limits, added after them
    ]
    assert "fanout_tick_ms" in ClusterSummary.model_fields


WORKER_ADDITIONS = [
    "net_rx_bytes_per_sec",
    "net_tx_bytes_per_sec",
    "disk_read_bytes_per_sec",
    "disk_write_bytes_per_sec",
    "load_avg",
    "memory_used_bytes",
    "memory_total_bytes",
    "storage_used_bytes",
    "storage_total_bytes",
    "gpu_memory_used_bytes",
    "gpu_memory_total_bytes",
    "gpus",
]
"""A worker's richer telemetry, added after the original fields (null: not measured)."""


def test_responses_ignore_fields_a_newer_master_adds() -> None:
    task = Task.model_validate_json(orjson.dumps({**TASK, "priority": 3}))
    assert task.task_id == "t1"
