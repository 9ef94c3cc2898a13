from __future__ import annotations

import math

import pytest

from cloudai.proto import pb
from cloudai.validation import (
    MAX_ID_LENGTH,
    MAX_RUNNING_TASKS,
    InvalidMessage,
    validate_heartbeat,
    validate_worker_info,
)


def hb(**kw: object) -> pb.Heartbeat:
    base: dict[str, object] = {"worker_id": "w1", "cpu_usage": 1.0}
    base.update(kw)
    return pb.Heartbeat(**base)  # type: ignore[arg-type]


def test_valid_heartbeat() -> None:
    validate_heartbeat(hb(running_tasks=[pb.RunningTask(task_id="t1", status="running")]))


@pytest.mark.parametrize("field", ["cpu_usage", "memory_usage", "storage_usage", "gpu_usage"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.1, 100.01])
def test_bad_percentages(field: str, value: float) -> None:
    with pytest.raises(InvalidMessage, match=field):
        validate_heartbeat(hb(**{field: value}))


@pytest.mark.parametrize(
    "worker_id, message",
    [("", "empty"), ("x" * (MAX_ID_LENGTH + 1), "limit"), ("a b", "invalid"), ("../x", "invalid")],
)
def test_bad_worker_ids(worker_id: str, message: str) -> None:
    with pytest.raises(InvalidMessage, match=message):
        validate_heartbeat(hb(worker_id=worker_id))


def test_max_length_id_is_fine() -> None:
    validate_heartbeat(hb(worker_id="w" * MAX_ID_LENGTH))


def test_duplicate_task_ids() -> None:
    tasks = [pb.RunningTask(task_id="t"), pb.RunningTask(task_id="t")]
    with pytest.raises(InvalidMessage, match="duplicate"):
        validate_heartbeat(hb(running_tasks=tasks))


def test_too_many_tasks() -> None:
    tasks = [pb.RunningTask(task_id=f"t{i}") for i in range(MAX_RUNNING_TASKS + 1)]
    with pytest.raises(InvalidMessage, match="limit"):
        validate_heartbeat(hb(running_tasks=tasks))


def test_negative_allocation() -> None:
    with pytest.raises(InvalidMessage, match="cpu_allocated"):
        validate_heartbeat(hb(running_tasks=[pb.RunningTask(task_id="t", cpu_allocated=-1)]))


def test_worker_info() -> None:
    validate_worker_info(pb.WorkerInfo(worker_id="w", total_cpu=2, total_memory=4))
    with pytest.raises(InvalidMessage, match="total_memory"):
        validate_worker_info(pb.WorkerInfo(worker_id="w", total_memory=math.nan))
