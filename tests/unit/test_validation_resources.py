"""Validation of the richer telemetry (Heartbeat extension fields 7-20, GpuDevice)."""

from __future__ import annotations

import math

import pytest

from cloudai.proto import pb
from cloudai.validation import (
    MAX_GPU_DEVICES,
    MAX_GPU_TEXT,
    MAX_MEMORY_BYTES,
    RESOURCE_FIELDS,
    InvalidMessage,
    has_resources,
    validate_heartbeat,
)

GIB = 1 << 30


def gpu(**kw: object) -> pb.GpuDevice:
    base: dict[str, object] = {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
        "utilization": 37.0,
        "memory_used_bytes": GIB,
        "memory_total_bytes": 80 * GIB,
    }
    base.update(kw)
    return pb.GpuDevice(**base)  # type: ignore[arg-type]


def hb(**kw: object) -> pb.Heartbeat:
    base: dict[str, object] = {"worker_id": "w1", "cpu_usage": 1.0}
    base.update(kw)
    return pb.Heartbeat(**base)  # type: ignore[arg-type]


FULL: dict[str, object] = {
    "net_rx_bytes_per_sec": 1e6,
    "net_tx_bytes_per_sec": 0.0,
    "disk_read_bytes_per_sec": 5e5,
    "disk_write_bytes_per_sec": 0.0,
    "load_avg_1m": 3.5,
    "load_avg_5m": 0.0,
    "load_avg_15m": 1.0,
    "memory_used_bytes": 4 * GIB,
    "memory_total_bytes": 16 * GIB,
    "storage_used_bytes": 100 * GIB,
    "storage_total_bytes": 500 * GIB,
    "gpu_memory_used_bytes": GIB,
    "gpu_memory_total_bytes": 80 * GIB,
}


def test_a_full_heartbeat_is_valid() -> None:
    message = hb(**FULL, gpus=[gpu(temperature_c=41.0, power_watts=300.0)])
    assert has_resources(message)
    validate_heartbeat(message)


def test_a_go_heartbeat_has_no_resources() -> None:
    assert not has_resources(hb(memory_usage=5.0, running_tasks=[pb.RunningTask(task_id="t")]))
    assert has_resources(hb(gpus=[gpu()]))
    for name in RESOURCE_FIELDS:
        assert has_resources(hb(**{name: 0})), name  # a zero that was sent counts


@pytest.mark.parametrize(
    "field",
    [
        "net_rx_bytes_per_sec",
        "net_tx_bytes_per_sec",
        "disk_read_bytes_per_sec",
        "disk_write_bytes_per_sec",
        "load_avg_1m",
        "load_avg_5m",
        "load_avg_15m",
    ],
)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.5, 1e300])
def test_bad_rates_and_loads(field: str, value: float) -> None:
    with pytest.raises(InvalidMessage, match=field):
        validate_heartbeat(hb(**{field: value}))


@pytest.mark.parametrize("kind", ["memory", "storage", "gpu_memory"])
def test_used_above_total_is_refused(kind: str) -> None:
    with pytest.raises(InvalidMessage, match=f"{kind}_used_bytes"):
        validate_heartbeat(hb(**{f"{kind}_used_bytes": 11, f"{kind}_total_bytes": 10}))
    validate_heartbeat(hb(**{f"{kind}_used_bytes": 11}))  # alone: nothing to compare with


def test_bytes_beyond_one_machine_are_refused() -> None:
    with pytest.raises(InvalidMessage, match="memory_total_bytes"):
        validate_heartbeat(hb(memory_total_bytes=MAX_MEMORY_BYTES + 1))
    with pytest.raises(InvalidMessage, match="storage_used_bytes"):
        validate_heartbeat(hb(storage_used_bytes=2**64 - 1))


@pytest.mark.parametrize(
    ("device", "message"),
    [
        (gpu(utilization=100.5), "gpus.utilization"),
        (gpu(utilization=math.nan), "gpus.utilization"),
        (gpu(memory_used_bytes=81 * GIB), "gpus.memory_used_bytes"),
        (gpu(memory_total_bytes=MAX_MEMORY_BYTES + 1), "gpus.memory_total_bytes"),
        (gpu(temperature_c=math.nan), "gpus.temperature_c"),
        (gpu(temperature_c=-300.0), "gpus.temperature_c"),
        (gpu(temperature_c=5000.0), "gpus.temperature_c"),
        (gpu(power_watts=-1.0), "gpus.power_watts"),
        (gpu(power_watts=math.inf), "gpus.power_watts"),
        (gpu(index=20_000), "gpus.index"),
        (gpu(name="x" * (MAX_GPU_TEXT + 1)), "name or uuid"),
        (gpu(uuid="x" * (MAX_GPU_TEXT + 1)), "name or uuid"),
    ],
)
def test_bad_gpu_devices(device: pb.GpuDevice, message: str) -> None:
    with pytest.raises(InvalidMessage, match=message):
        validate_heartbeat(hb(gpus=[gpu(index=1), device]))


def test_gpu_without_sensors_and_a_cold_one_are_valid() -> None:
    validate_heartbeat(hb(gpus=[gpu(), gpu(index=1, temperature_c=-5.0, power_watts=0.0)]))


def test_too_many_gpus() -> None:
    with pytest.raises(InvalidMessage, match="GPUs in one heartbeat"):
        validate_heartbeat(hb(gpus=[gpu(index=i) for i in range(MAX_GPU_DEVICES + 1)]))
