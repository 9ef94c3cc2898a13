from __future__ import annotations

import logging
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloudai.validation import validate_heartbeat
from cloudai.worker.gpu import GpuSample, NvmlGpuProvider
from cloudai.worker.heartbeat import build_heartbeat
from cloudai.worker.samplers import SystemSampler, clamp_percent
from cloudai.worker.settings import GIB

Disk = namedtuple("Disk", "total used free percent")


class FakePsutil:
    def __init__(self) -> None:
        self.cpu_calls: list[Any] = []
        self.cpu_values = [0.0, 37.5, 250.0]
        self.disk_paths: list[str] = []

    def cpu_percent(self, interval: Any = "missing") -> float:
        self.cpu_calls.append(interval)
        return self.cpu_values[min(len(self.cpu_calls) - 1, len(self.cpu_values) - 1)]

    def cpu_count(self, logical: bool = True) -> int:
        return 12

    def virtual_memory(self) -> Any:
        return SimpleNamespace(total=64 * GIB, percent=42.0)

    def disk_usage(self, path: str) -> Disk:
        self.disk_paths.append(path)
        return Disk(total=500 * GIB, used=100 * GIB, free=400 * GIB, percent=20.0)


class FakeGpu:
    def count(self) -> int:
        return 2

    def utilisation(self) -> float:
        return 55.0


def test_totals_are_the_machines_real_resources(tmp_path: Path) -> None:
    ps = FakePsutil()
    totals = SystemSampler(tmp_path, FakeGpu(), ps).totals()
    assert (totals.cpu_cores, totals.memory_gb, totals.storage_gb, totals.gpu_count) == (
        12.0,
        64.0,
        500.0,
        2.0,
    )
    assert ps.disk_paths == [str(tmp_path)]  # the filesystem holding the work dir


def test_cpu_percent_never_blocks_and_samples_are_clamped(tmp_path: Path) -> None:
    ps = FakePsutil()
    sampler = SystemSampler(tmp_path, FakeGpu(), ps)
    assert ps.cpu_calls == [None]  # primed without an interval
    first = sampler.sample()
    assert first.cpu_percent == 37.5
    assert (first.memory_percent, first.storage_percent, first.gpu_percent) == (42.0, 20.0, 55.0)
    assert first.storage_free_gb == 400.0
    assert sampler.sample().cpu_percent == 100.0  # clamped
    assert ps.cpu_calls == [None, None, None]


def test_sampler_without_gpu_provider_reports_zero(tmp_path: Path) -> None:
    sampler = SystemSampler(tmp_path, None, FakePsutil())
    assert sampler.totals().gpu_count == 0
    assert sampler.sample().gpu_percent == 0.0


def test_real_psutil_sample_is_within_range(tmp_path: Path) -> None:
    sampler = SystemSampler(tmp_path)
    totals = sampler.totals()
    assert totals.cpu_cores >= 1 and totals.memory_gb > 0 and totals.storage_gb > 0
    sample = sampler.sample()
    for value in (sample.cpu_percent, sample.memory_percent, sample.storage_percent):
        assert 0.0 <= value <= 100.0


@pytest.mark.parametrize(
    ("value", "expected"), [(-1, 0.0), (50, 50.0), (101, 100.0), (float("nan"), 0.0)]
)
def test_clamp_percent(value: float, expected: float) -> None:
    assert clamp_percent(value) == expected


# -- NVML ----------------------------------------------------------------------------------


class NVMLError(Exception):
    pass


class FakeNvml:
    def __init__(self, utilisations: list[int], fail_init: bool = False) -> None:
        self.utilisations = utilisations
        self.fail_init = fail_init
        self.fail_query = False
        self.init_calls = 0
        self.shutdown_calls = 0
        self.no_sensors: set[int] = set()  # devices without temperature and power
        self.sensor_calls = 0

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.fail_init:
            raise NVMLError("Driver Not Loaded")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.utilisations)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        if self.fail_query:
            raise NVMLError("GPU is lost")
        return SimpleNamespace(gpu=self.utilisations[handle], memory=0)

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"Fake GPU %d" % handle  # older nvidia-ml-py: bytes

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle:08d}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        if self.fail_query:
            raise NVMLError("GPU is lost")
        return SimpleNamespace(total=(handle + 1) * 8 * GIB, used=handle * GIB, free=0)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        self.sensor_calls += 1
        if handle in self.no_sensors:
            raise NVMLError("Not Supported")
        assert sensor == 0  # NVML_TEMPERATURE_GPU
        return 40 + handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self.sensor_calls += 1
        if handle in self.no_sensors:
            raise NVMLError("Not Supported")
        return 125_500  # milliwatts


def test_nvml_mean_utilisation_and_count() -> None:
    nvml = FakeNvml([10, 30, 80])
    gpu = NvmlGpuProvider(nvml)
    assert gpu.count() == 3
    assert gpu.utilisation() == pytest.approx(40.0)
    assert nvml.init_calls == 1  # initialised once, lazily
    gpu.close()
    assert nvml.shutdown_calls == 1
    assert gpu.utilisation() == 0.0


def test_nvml_no_gpus_is_zero() -> None:
    gpu = NvmlGpuProvider(FakeNvml([]))
    assert (gpu.count(), gpu.utilisation()) == (0, 0.0)


def test_nvml_init_error_yields_zero_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml([50], fail_init=True)
    gpu = NvmlGpuProvider(nvml)
    with caplog.at_level(logging.INFO, logger="cloudai.worker.gpu"):
        results = [(gpu.count(), gpu.utilisation()) for _ in range(5)]
    assert results == [(0, 0.0)] * 5
    assert nvml.init_calls == 1  # not retried on every sample
    messages = [r.getMessage() for r in caplog.records if r.name == "cloudai.worker.gpu"]
    assert len(messages) == 1 and "Driver Not Loaded" in messages[0]


def test_nvml_query_error_yields_zero_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml([50, 70])
    gpu = NvmlGpuProvider(nvml)
    assert gpu.utilisation() == 60.0
    nvml.fail_query = True
    with caplog.at_level(logging.INFO, logger="cloudai.worker.gpu"):
        assert [gpu.utilisation() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert len([r for r in caplog.records if r.name == "cloudai.worker.gpu"]) == 1
    nvml.fail_query = False
    assert gpu.utilisation() == 60.0  # a transient failure is not permanent


def test_nvml_devices_report_each_gpu() -> None:
    nvml = FakeNvml([10, 30])
    nvml.no_sensors = {1}
    gpu = NvmlGpuProvider(nvml)
    first, second = gpu.devices()
    assert first == GpuSample(
        index=0,
        name="Fake GPU 0",
        uuid="GPU-00000000",
        utilization=10.0,
        memory_used_bytes=0,
        memory_total_bytes=8 * GIB,
        temperature_c=40.0,
        power_watts=125.5,
    )
    assert (second.index, second.name, second.utilization) == (1, "Fake GPU 1", 30.0)
    assert (second.memory_used_bytes, second.memory_total_bytes) == (GIB, 16 * GIB)
    assert (second.temperature_c, second.power_watts) == (None, None)  # not supported
    calls = nvml.sensor_calls
    gpu.devices()
    assert nvml.sensor_calls == calls + 2  # device 1 is not asked again, device 0 is


def test_nvml_devices_empty_without_gpus_or_driver() -> None:
    assert NvmlGpuProvider(FakeNvml([])).devices() == []
    assert NvmlGpuProvider(FakeNvml([50], fail_init=True)).devices() == []


def test_nvml_error_mid_run_yields_no_devices_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml([50, 70])
    gpu = NvmlGpuProvider(nvml)
    sampler = SystemSampler(Path("/"), gpu, FakePsutil())
    assert [d.utilization for d in sampler.sample().gpus] == [50.0, 70.0]
    assert sampler.sample().gpu_percent == 60.0
    nvml.fail_query = True  # the GPU fell off the bus
    with caplog.at_level(logging.INFO, logger="cloudai.worker.gpu"):
        samples = [sampler.sample() for _ in range(3)]
    assert all(s.gpus == () and s.gpu_percent == 0.0 for s in samples)
    assert len([r for r in caplog.records if r.name == "cloudai.worker.gpu"]) == 1
    nvml.fail_query = False
    assert len(sampler.sample().gpus) == 2  # back once NVML answers again


def test_real_nvml_module_never_raises() -> None:
    gpu = NvmlGpuProvider()  # the real pynvml: no driver here, so 0; with one, real data
    assert gpu.count() >= 0
    assert 0.0 <= gpu.utilisation() <= 100.0
    devices = gpu.devices()
    assert len(devices) == gpu.count()
    for index, device in enumerate(devices):
        assert device.index == index and device.uuid and device.name
        assert 0.0 <= device.utilization <= 100.0
        assert 0 <= device.memory_used_bytes <= device.memory_total_bytes
        assert device.memory_total_bytes > 0
        if device.temperature_c is not None:
            assert 0.0 < device.temperature_c < 150.0
        if device.power_watts is not None:
            assert 0.0 <= device.power_watts < 5_000.0
    gpu.close()
    assert gpu.devices() == []


def test_real_nvml_gpus_reach_the_heartbeat(tmp_path: Path) -> None:
    gpu = NvmlGpuProvider()
    try:
        count = gpu.count()
        if count == 0:
            pytest.skip("no NVIDIA GPU and driver on this machine")
        hb = build_heartbeat("w1", SystemSampler(tmp_path, gpu).sample(), [])
        validate_heartbeat(hb)  # what a real GPU reports, the master accepts
        assert [d.index for d in hb.gpus] == list(range(count))
        assert hb.gpu_memory_total_bytes == sum(d.memory_total_bytes for d in hb.gpus) > 0
    finally:
        gpu.close()
