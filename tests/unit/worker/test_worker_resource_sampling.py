"""The richer telemetry of a sample (network, disk, load, bytes, GPUs) and the heartbeat
built from it: injected psutil, clock, load average and GPUs; no real machine figures."""

from __future__ import annotations

import logging
import math
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloudai.proto import pb
from cloudai.validation import validate_heartbeat
from cloudai.worker.gpu import GpuSample
from cloudai.worker.heartbeat import build_heartbeat
from cloudai.worker.samplers import SystemSample, SystemSampler, is_loopback
from cloudai.worker.settings import GIB

Disk = namedtuple("Disk", "total used free percent")
Nic = namedtuple("Nic", "bytes_sent bytes_recv")
DiskIo = namedtuple("DiskIo", "read_bytes write_bytes")


class CountingPsutil:
    """psutil with counters the test moves."""

    def __init__(self) -> None:
        self.nics: dict[str, Nic] = {"lo": Nic(0, 0), "eth0": Nic(0, 0)}
        self.disk_io: DiskIo | None = DiskIo(0, 0)
        self.net_error: Exception | None = None
        self.calls: list[str] = []

    def cpu_percent(self, interval: Any = None) -> float:
        return 10.0

    def cpu_count(self, logical: bool = True) -> int:
        return 4

    def virtual_memory(self) -> Any:
        return SimpleNamespace(total=16 * GIB, available=12 * GIB, percent=25.0)

    def disk_usage(self, path: str) -> Disk:
        return Disk(total=500 * GIB, used=100 * GIB, free=400 * GIB, percent=20.0)

    def net_io_counters(self, pernic: bool = False) -> dict[str, Nic]:
        self.calls.append(f"net pernic={pernic}")
        if self.net_error is not None:
            raise self.net_error
        return dict(self.nics)

    def disk_io_counters(self, perdisk: bool = False) -> DiskIo | None:
        self.calls.append(f"disk perdisk={perdisk}")
        return self.disk_io


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(ps: CountingPsutil, clock: Clock, **kwargs: Any) -> SystemSampler:
    kwargs.setdefault("loadavg", lambda: (1.5, 0.75, 0.25))
    return SystemSampler(Path("/work"), None, ps, clock=clock, **kwargs)


def test_rates_come_from_counter_deltas_between_samples() -> None:
    ps, clock = CountingPsutil(), Clock()
    sampler = make(ps, clock)  # the first readings are taken here
    clock.now = 5.0
    ps.nics = {"lo": Nic(10**9, 10**9), "eth0": Nic(bytes_sent=5_000, bytes_recv=50_000)}
    ps.disk_io = DiskIo(read_bytes=1_000_000, write_bytes=500_000)
    sample = sampler.sample()
    assert (sample.net_rx_bytes_per_sec, sample.net_tx_bytes_per_sec) == (10_000.0, 1_000.0)
    assert (sample.disk_read_bytes_per_sec, sample.disk_write_bytes_per_sec) == (
        200_000.0,
        100_000.0,
    )
    assert "net pernic=True" in ps.calls and "disk perdisk=False" in ps.calls


def test_bytes_and_load_average() -> None:
    sample = make(CountingPsutil(), Clock()).sample()
    assert sample.load_avg == (1.5, 0.75, 0.25)
    # In use = not available, the measure of memory_percent.
    assert (sample.memory_used_bytes, sample.memory_total_bytes) == (4 * GIB, 16 * GIB)
    assert (sample.storage_used_bytes, sample.storage_total_bytes) == (100 * GIB, 500 * GIB)


def test_what_cannot_be_read_is_none_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    ps, clock = CountingPsutil(), Clock()
    ps.net_error = PermissionError("no /proc/net/dev")
    ps.disk_io = None  # psutil: no disks (a container)

    def no_loadavg() -> tuple[float, float, float]:
        raise OSError("not on this system")

    with caplog.at_level(logging.INFO, logger="cloudai.worker.samplers"):
        sampler = make(ps, clock, loadavg=no_loadavg)
        for step in range(3):
            clock.now = step + 1.0
            sample = sampler.sample()
            assert sample.net_rx_bytes_per_sec is None and sample.net_tx_bytes_per_sec is None
            assert sample.disk_read_bytes_per_sec is None and sample.load_avg is None
            assert sample.cpu_percent == 10.0  # the rest of the sample is unaffected
    messages = [r.getMessage() for r in caplog.records if r.name == "cloudai.worker.samplers"]
    assert len(messages) == 2, messages  # network once, load average once
    assert any("/proc/net/dev" in m for m in messages)


def test_loopback_interfaces_are_left_out() -> None:
    assert is_loopback("lo") and is_loopback("lo0")
    assert not is_loopback("eth0") and not is_loopback("lowpan0") and not is_loopback("long")


def sample(**kwargs: Any) -> SystemSample:
    values: dict[str, Any] = {
        "cpu_percent": 1.0,
        "memory_percent": 2.0,
        "storage_percent": 3.0,
        "gpu_percent": 4.0,
        "storage_free_gb": 5.0,
    }
    values.update(kwargs)
    return SystemSample(**values)


def test_heartbeat_without_measurements_is_the_original_message() -> None:
    hb = build_heartbeat("w1", sample(), [pb.RunningTask(task_id="t1")])
    assert hb == pb.Heartbeat(
        worker_id="w1",
        cpu_usage=1.0,
        memory_usage=2.0,
        storage_usage=3.0,
        gpu_usage=4.0,
        running_tasks=[pb.RunningTask(task_id="t1")],
    )
    assert [f.number for f, _ in hb.ListFields()] == [1, 2, 3, 4, 5, 6]


GPU = GpuSample(0, "NVIDIA H100", "GPU-1", 37.0, 2 * GIB, 80 * GIB, 41.0, 120.5)


def test_heartbeat_sets_what_was_measured() -> None:
    hb = build_heartbeat(
        "w1",
        sample(
            net_rx_bytes_per_sec=10.0,
            net_tx_bytes_per_sec=0.0,  # a known zero is sent
            disk_read_bytes_per_sec=30.0,
            disk_write_bytes_per_sec=40.0,
            load_avg=(0.5, 0.25, 0.125),
            memory_used_bytes=4 * GIB,
            memory_total_bytes=16 * GIB,
            storage_used_bytes=100,
            storage_total_bytes=200,
            gpus=(GPU, GpuSample(1, "NVIDIA H100", "GPU-2", 0.0, 0, 80 * GIB)),
        ),
        [],
    )
    validate_heartbeat(hb)
    assert hb.HasField("net_tx_bytes_per_sec") and hb.net_tx_bytes_per_sec == 0.0
    assert (hb.net_rx_bytes_per_sec, hb.disk_read_bytes_per_sec) == (10.0, 30.0)
    assert (hb.load_avg_1m, hb.load_avg_5m, hb.load_avg_15m) == (0.5, 0.25, 0.125)
    assert (hb.memory_used_bytes, hb.memory_total_bytes) == (4 * GIB, 16 * GIB)
    assert (hb.storage_used_bytes, hb.storage_total_bytes) == (100, 200)
    assert (hb.gpu_memory_used_bytes, hb.gpu_memory_total_bytes) == (2 * GIB, 160 * GIB)
    first, second = hb.gpus
    assert (first.name, first.uuid, first.utilization) == ("NVIDIA H100", "GPU-1", 37.0)
    assert (first.temperature_c, first.power_watts) == (41.0, 120.5)
    assert not second.HasField("temperature_c") and not second.HasField("power_watts")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_heartbeat_leaves_out_values_the_master_would_refuse(bad: float) -> None:
    hb = build_heartbeat(
        "w1",
        sample(
            net_rx_bytes_per_sec=bad,
            net_tx_bytes_per_sec=5.0,
            load_avg=(bad, 1.0, 1.0),
            memory_used_bytes=20,
            memory_total_bytes=10,  # used above total (a racy read): clamped
            gpus=(GpuSample(0, "g", "u", bad, 5, 10, temperature_c=bad, power_watts=bad),),
        ),
        [],
    )
    validate_heartbeat(hb)  # the heartbeat is never refused for a figure
    assert not hb.HasField("net_rx_bytes_per_sec") and hb.net_tx_bytes_per_sec == 5.0
    assert not hb.HasField("load_avg_1m") and not hb.HasField("load_avg_5m")
    assert (hb.memory_used_bytes, hb.memory_total_bytes) == (10, 10)
    assert hb.gpus[0].utilization == 0.0
    assert not hb.gpus[0].HasField("power_watts")
