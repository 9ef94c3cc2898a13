"""The heartbeat message from a machine sample. Pure: no I/O.

The original fields are always set. The richer telemetry (protocol extension fields
7-20) is set only when the sample has the figure and it is a sane one (finite, not
negative; used never above total): an unset field tells the master "not measured",
and a value the master would refuse never costs the worker its heartbeat.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from cloudai.proto import pb
from cloudai.worker.gpu import GpuSample
from cloudai.worker.samplers import SystemSample


def _amount(value: float | None) -> float | None:
    """A finite, non-negative number, or None."""
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _used_total(used: int | None, total: int | None) -> tuple[int | None, int | None]:
    if total is None or total < 0:
        return None, None
    if used is None or used < 0:
        return None, int(total)
    return min(int(used), int(total)), int(total)


def gpu_device(sample: GpuSample) -> pb.GpuDevice:
    used, total = _used_total(sample.memory_used_bytes, sample.memory_total_bytes)
    device = pb.GpuDevice(
        index=max(0, sample.index),
        name=sample.name,
        uuid=sample.uuid,
        utilization=min(100.0, _amount(sample.utilization) or 0.0),
        memory_used_bytes=used or 0,
        memory_total_bytes=total or 0,
    )
    temperature = sample.temperature_c
    if temperature is not None and math.isfinite(temperature):
        device.temperature_c = temperature
    power = _amount(sample.power_watts)
    if power is not None:
        device.power_watts = power
    return device


def build_heartbeat(
    worker_id: str, sample: SystemSample, running_tasks: Iterable[pb.RunningTask]
) -> pb.Heartbeat:
    hb = pb.Heartbeat(
        worker_id=worker_id,
        cpu_usage=sample.cpu_percent,
        memory_usage=sample.memory_percent,
        storage_usage=sample.storage_percent,
        gpu_usage=sample.gpu_percent,
        running_tasks=running_tasks,
    )
    rates = (
        ("net_rx_bytes_per_sec", sample.net_rx_bytes_per_sec),
        ("net_tx_bytes_per_sec", sample.net_tx_bytes_per_sec),
        ("disk_read_bytes_per_sec", sample.disk_read_bytes_per_sec),
        ("disk_write_bytes_per_sec", sample.disk_write_bytes_per_sec),
    )
    for name, value in rates:
        rate = _amount(value)
        if rate is not None:
            setattr(hb, name, rate)
    if sample.load_avg is not None:
        load = [_amount(v) for v in sample.load_avg]
        if None not in load:
            hb.load_avg_1m, hb.load_avg_5m, hb.load_avg_15m = load  # type: ignore[assignment]
    pairs = (
        ("memory", sample.memory_used_bytes, sample.memory_total_bytes),
        ("storage", sample.storage_used_bytes, sample.storage_total_bytes),
    )
    for kind, used_bytes, total_bytes in pairs:
        used, total = _used_total(used_bytes, total_bytes)
        if used is not None:
            setattr(hb, f"{kind}_used_bytes", used)
        if total is not None:
            setattr(hb, f"{kind}_total_bytes", total)
    if sample.gpus:
        devices = [gpu_device(g) for g in sample.gpus]
        hb.gpus.extend(devices)
        hb.gpu_memory_used_bytes = sum(d.memory_used_bytes for d in devices)
        hb.gpu_memory_total_bytes = sum(d.memory_total_bytes for d in devices)
    return hb
