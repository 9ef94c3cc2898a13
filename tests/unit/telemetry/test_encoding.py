from __future__ import annotations

import orjson

from cloudai.telemetry.encoding import encode_fragment, join_fragments
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry

CONTRACT_WORKER_KEYS = [
    "worker_id",
    "cpu_usage",
    "memory_usage",
    "gpu_usage",
    "running_tasks",
    "last_update",
    "is_active",
]
CONTRACT_TASK_KEYS = ["task_id", "cpu_allocated", "memory_allocated", "gpu_allocated", "status"]


def sample() -> WorkerTelemetry:
    return WorkerTelemetry(
        "worker-1",
        cpu_usage=12.5,
        memory_usage=40.1,
        gpu_usage=0.0,
        running_tasks=[TaskTelemetry("t1", 1.0, 0.5, 0.0, "running")],
        last_update=1764300000.7,
        is_active=True,
    )


def test_contract_shape_and_order() -> None:
    frame = join_fragments([encode_fragment(sample())])
    decoded = orjson.loads(frame)
    worker = decoded["worker-1"]
    assert list(worker)[: len(CONTRACT_WORKER_KEYS)] == CONTRACT_WORKER_KEYS
    assert list(worker["running_tasks"][0])[:5] == CONTRACT_TASK_KEYS
    assert worker["last_update"] == 1764300000  # Unix seconds, an integer
    assert isinstance(worker["is_active"], bool)
    # The contract's example, field for field.
    expected = {
        "worker_id": "worker-1",
        "cpu_usage": 12.5,
        "memory_usage": 40.1,
        "gpu_usage": 0.0,
        "running_tasks": [
            {
                "task_id": "t1",
                "cpu_allocated": 1.0,
                "memory_allocated": 0.5,
                "gpu_allocated": 0.0,
                "status": "running",
            }
        ],
        "last_update": 1764300000,
        "is_active": True,
    }
    trimmed = {k: worker[k] for k in CONTRACT_WORKER_KEYS}
    trimmed["running_tasks"] = [
        {k: t[k] for k in CONTRACT_TASK_KEYS} for t in worker["running_tasks"]
    ]
    assert trimmed == expected


def test_frames_join_fragments_without_reencoding() -> None:
    a, b = sample(), sample()
    b.worker_id = "worker-2"
    frame = join_fragments([encode_fragment(a), encode_fragment(b)])
    assert set(orjson.loads(frame)) == {"worker-1", "worker-2"}
    assert join_fragments([]) == b"{}"


def test_state_is_added_after_the_contract_and_storage_usage() -> None:
    worker = orjson.loads(join_fragments([encode_fragment(sample())]))["worker-1"]
    assert list(worker)[len(CONTRACT_WORKER_KEYS) :] == ["storage_usage", "state"]
    assert worker["state"] == "active"  # derived from is_active when not set
    inactive = sample()
    inactive.is_active = False
    assert orjson.loads(encode_fragment(inactive)[len(b'"worker-1":') :])["state"] == "inactive"
    suspect = sample()
    suspect.state = "suspect"
    decoded = orjson.loads(join_fragments([encode_fragment(suspect)]))["worker-1"]
    assert decoded["state"] == "suspect" and decoded["is_active"] is True
