"""Richer telemetry from a heartbeat into the state and the WebSocket JSON: new keys only
when the worker sent them; a Go worker's heartbeat gives exactly the earlier shape."""

from __future__ import annotations

import orjson

from cloudai.proto import pb
from cloudai.telemetry.encoding import encode_fragment, join_fragments
from cloudai.telemetry.model import GpuTelemetry, ResourceTelemetry, WorkerTelemetry

GIB = 1 << 30

EARLIER_KEYS = [
    "worker_id",
    "cpu_usage",
    "memory_usage",
    "gpu_usage",
    "running_tasks",
    "last_update",
    "is_active",
    "storage_usage",
    "state",
]
NEW_KEYS = [
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


def go_heartbeat() -> pb.Heartbeat:
    return pb.Heartbeat(
        worker_id="w1",
        cpu_usage=12.5,
        memory_usage=40.0,
        storage_usage=10.0,
        gpu_usage=0.0,
        running_tasks=[pb.RunningTask(task_id="t1", cpu_allocated=1.0, status="running")],
    )


def rich_heartbeat() -> pb.Heartbeat:
    hb = go_heartbeat()
    hb.net_rx_bytes_per_sec = 1500.5
    hb.net_tx_bytes_per_sec = 0.0
    hb.disk_read_bytes_per_sec = 4096.0
    hb.disk_write_bytes_per_sec = 8192.0
    hb.load_avg_1m, hb.load_avg_5m, hb.load_avg_15m = 0.5, 0.25, 0.125
    hb.memory_used_bytes, hb.memory_total_bytes = 4 * GIB, 16 * GIB
    hb.storage_used_bytes, hb.storage_total_bytes = 100 * GIB, 500 * GIB
    hb.gpu_memory_used_bytes, hb.gpu_memory_total_bytes = GIB, 160 * GIB
    hb.gpus.add(
        index=0,
        name="NVIDIA H100",
        uuid="GPU-1",
        utilization=37.0,
        memory_used_bytes=GIB,
        memory_total_bytes=80 * GIB,
        temperature_c=41.0,
        power_watts=120.5,
    )
    hb.gpus.add(index=1, name="NVIDIA H100", uuid="GPU-2", memory_total_bytes=80 * GIB)
    return hb


def encoded(state: WorkerTelemetry) -> dict[str, object]:
    decoded = orjson.loads(join_fragments([encode_fragment(state)]))
    worker: dict[str, object] = decoded[state.worker_id]
    return worker


def test_a_go_workers_heartbeat_gives_exactly_the_earlier_json() -> None:
    state = WorkerTelemetry.from_heartbeat(go_heartbeat(), 1764300000.0)
    assert state.resources is None
    worker = encoded(state)
    assert list(worker) == EARLIER_KEYS
    assert worker == {
        "worker_id": "w1",
        "cpu_usage": 12.5,
        "memory_usage": 40.0,
        "gpu_usage": 0.0,
        "running_tasks": [
            {
                "task_id": "t1",
                "cpu_allocated": 1.0,
                "memory_allocated": 0.0,
                "gpu_allocated": 0.0,
                "status": "running",
                "cpu_usage": 0.0,
                "memory_used_bytes": 0,
            }
        ],
        "last_update": 1764300000,
        "is_active": True,
        "storage_usage": 10.0,
        "state": "active",
    }


def test_a_full_heartbeat_adds_the_new_keys_after_the_earlier_ones() -> None:
    worker = encoded(WorkerTelemetry.from_heartbeat(rich_heartbeat(), 1764300000.0))
    assert list(worker) == EARLIER_KEYS + NEW_KEYS
    assert worker["net_rx_bytes_per_sec"] == 1500.5
    assert worker["net_tx_bytes_per_sec"] == 0.0  # a measured zero is sent
    assert worker["load_avg"] == [0.5, 0.25, 0.125]
    assert worker["memory_used_bytes"] == 4 * GIB and worker["storage_total_bytes"] == 500 * GIB
    assert worker["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA H100",
            "uuid": "GPU-1",
            "utilization": 37.0,
            "memory_used_bytes": GIB,
            "memory_total_bytes": 80 * GIB,
            "temperature_c": 41.0,
            "power_watts": 120.5,
        },
        {  # no temperature or power reported: the keys are absent
            "index": 1,
            "name": "NVIDIA H100",
            "uuid": "GPU-2",
            "utilization": 0.0,
            "memory_used_bytes": 0,
            "memory_total_bytes": 80 * GIB,
        },
    ]


def test_only_the_fields_sent_are_keys() -> None:
    hb = go_heartbeat()
    hb.load_avg_5m = 2.0
    hb.memory_total_bytes = 16 * GIB
    worker = encoded(WorkerTelemetry.from_heartbeat(hb, 1.0))
    assert list(worker) == [*EARLIER_KEYS, "load_avg", "memory_total_bytes"]
    assert worker["load_avg"] == [None, 2.0, None]  # a position not sent is null


def test_gpus_alone_are_enough() -> None:
    hb = go_heartbeat()
    hb.gpus.add(index=0, utilization=5.0)
    state = WorkerTelemetry.from_heartbeat(hb, 1.0)
    assert state.resources is not None and len(state.resources.gpus) == 1
    assert list(encoded(state))[len(EARLIER_KEYS) :] == ["gpus"]


def test_resources_survive_copies_and_liveness_changes() -> None:
    state = WorkerTelemetry.from_heartbeat(rich_heartbeat(), 1.0)
    clone = state.copy()
    clone.is_active, clone.state = False, "inactive"
    worker = encoded(clone)
    assert worker["state"] == "inactive" and worker["gpus"]
    assert clone.resources is state.resources  # immutable: shared, never copied


def test_resource_model_json_is_in_a_fixed_order() -> None:
    resources = ResourceTelemetry(
        gpu_memory_total_bytes=1,
        net_rx_bytes_per_sec=2.0,
        gpus=(GpuTelemetry(0, "", "", 0.0, 0, 1),),
    )
    assert list(resources.to_json()) == ["net_rx_bytes_per_sec", "gpu_memory_total_bytes", "gpus"]
    assert ResourceTelemetry().to_json() == {}
