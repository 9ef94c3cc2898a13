"""GET /api/workers/{id}: the worker view carries the richer telemetry the worker sent,
null (and no GPUs) for what it did not."""

from __future__ import annotations

import orjson

from cloudai.master.cluster_admin import worker_model
from cloudai.master.registry import WorkerEntry
from cloudai.proto import pb
from cloudai.telemetry.model import WorkerTelemetry

GIB = 1 << 30
ENTRY = WorkerEntry("w1", "127.0.0.1:50052", total_cpu=8, total_memory=16, total_gpu=1)


def test_a_go_worker_has_nulls_and_no_gpus() -> None:
    telemetry = WorkerTelemetry.from_heartbeat(pb.Heartbeat(worker_id="w1", cpu_usage=5.0), 9.0)
    sent = orjson.loads(worker_model(ENTRY, telemetry).model_dump_json())
    assert sent["cpu_usage"] == 5.0
    assert sent["net_rx_bytes_per_sec"] is None and sent["load_avg"] is None
    assert sent["memory_used_bytes"] is None and sent["gpus"] == []


def test_the_measured_figures_are_in_the_view() -> None:
    hb = pb.Heartbeat(
        worker_id="w1",
        net_rx_bytes_per_sec=100.0,
        disk_write_bytes_per_sec=0.0,
        load_avg_1m=1.0,
        load_avg_5m=2.0,
        load_avg_15m=3.0,
        memory_used_bytes=4 * GIB,
        memory_total_bytes=16 * GIB,
        gpu_memory_used_bytes=GIB,
        gpu_memory_total_bytes=80 * GIB,
        gpus=[
            pb.GpuDevice(
                index=0,
                name="NVIDIA H100",
                uuid="GPU-1",
                utilization=50.0,
                memory_used_bytes=GIB,
                memory_total_bytes=80 * GIB,
                power_watts=99.5,
            )
        ],
    )
    view = worker_model(ENTRY, WorkerTelemetry.from_heartbeat(hb, 9.0))
    sent = orjson.loads(view.model_dump_json())
    assert sent["net_rx_bytes_per_sec"] == 100.0 and sent["net_tx_bytes_per_sec"] is None
    assert sent["disk_write_bytes_per_sec"] == 0.0
    assert sent["load_avg"] == [1.0, 2.0, 3.0]
    assert (sent["memory_used_bytes"], sent["memory_total_bytes"]) == (4 * GIB, 16 * GIB)
    assert sent["storage_used_bytes"] is None
    assert sent["gpu_memory_total_bytes"] == 80 * GIB
    assert sent["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA H100",
            "uuid": "GPU-1",
            "utilization": 50.0,
            "memory_used_bytes": GIB,
            "memory_total_bytes": 80 * GIB,
            "temperature_c": None,
            "power_watts": 99.5,
        }
    ]


def test_no_telemetry_yet() -> None:
    sent = orjson.loads(worker_model(ENTRY, None).model_dump_json())
    assert sent["last_update"] is None and sent["gpus"] == [] and sent["load_avg"] is None
