"""GPU telemetry through NVML (the ``pynvml`` module of nvidia-ml-py). No nvidia-smi.

One provider class per vendor; this is NVIDIA's. Any NVML failure (no driver, no
library, a GPU gone) is logged once and yields no data: zero GPUs, 0 % utilisation, no
devices. Nothing here raises. The NVML module is injectable so tests can pass a fake.

Per device (``devices``): utilisation and memory, read at every sample; name and UUID,
read once; temperature and power when the device reports them (a device that cannot
is not asked again).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

NVML_TEMPERATURE_GPU = 0  # pynvml.NVML_TEMPERATURE_GPU: the GPU die's sensor


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU's reading. ``temperature_c`` and ``power_watts``: None when not reported."""

    index: int
    name: str
    uuid: str
    utilization: float  # percent 0..100
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float | None = None
    power_watts: float | None = None


def _load_pynvml() -> ModuleType | None:
    try:
        import pynvml
    except Exception:  # not installed, or broken: treat as "no NVIDIA driver"
        return None
    return pynvml


def _text(value: Any) -> str:
    """NVML strings: ``str`` from recent nvidia-ml-py, ``bytes`` from older ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(slots=True)
class _Device:
    index: int
    handle: Any
    name: str = ""
    uuid: str = ""
    has_temperature: bool = True  # False once the device did not report it
    has_power: bool = True


class NvmlGpuProvider:
    """Every GPU's values and their number; thread-safe, lazily initialised."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml: Any = nvml if nvml is not None else _load_pynvml()
        self._lock = threading.Lock()
        self._initialised = False
        self._disabled = self._nvml is None
        self._devices: list[_Device] = []
        self._reported = False
        if self._nvml is None:
            self._report("the nvidia-ml-py (pynvml) module is not available")

    def _report(self, what: str) -> None:
        if not self._reported:
            self._reported = True
            log.info("no GPU telemetry (GPU usage reported as 0): %s", what)

    def _ensure_init(self) -> bool:
        if self._initialised:
            return True
        if self._disabled:
            return False
        nvml = self._nvml
        try:
            nvml.nvmlInit()
            count = int(nvml.nvmlDeviceGetCount())
            self._devices = [_Device(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        except Exception as exc:  # NVMLError and anything a broken library raises
            self._disabled = True
            self._devices = []
            self._report(f"NVML initialisation failed: {exc}")
            return False
        for device in self._devices:  # static: read once; a device that hides them is ""
            with contextlib.suppress(Exception):
                device.name = _text(nvml.nvmlDeviceGetName(device.handle))
            with contextlib.suppress(Exception):
                device.uuid = _text(nvml.nvmlDeviceGetUUID(device.handle))
        self._initialised = True
        return True

    def count(self) -> int:
        with self._lock:
            return len(self._devices) if self._ensure_init() else 0

    def utilisation(self) -> float:
        """Mean GPU utilisation in percent (0..100) over all GPUs; 0 without data."""
        with self._lock:
            if not self._ensure_init() or not self._devices:
                return 0.0
            try:
                values = [
                    float(self._nvml.nvmlDeviceGetUtilizationRates(d.handle).gpu)
                    for d in self._devices
                ]
            except Exception as exc:
                self._report(f"NVML query failed: {exc}")
                return 0.0
        return min(100.0, max(0.0, sum(values) / len(values)))

    def devices(self) -> list[GpuSample]:
        """One reading per GPU, in NVML's index order; empty without data (no GPU, no
        driver, or a query that failed: then for this sample only)."""
        with self._lock:
            if not self._ensure_init() or not self._devices:
                return []
            try:
                return [self._read(device) for device in self._devices]
            except Exception as exc:
                self._report(f"NVML query failed: {exc}")
                return []

    def _read(self, device: _Device) -> GpuSample:
        nvml, handle = self._nvml, device.handle
        utilization = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        temperature = power = None
        if device.has_temperature:
            try:
                temperature = float(nvml.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU))
            except Exception:  # not supported on this device (or not now): stop asking
                device.has_temperature = False
        if device.has_power:
            try:
                power = float(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0  # milliwatts
            except Exception:
                device.has_power = False
        return GpuSample(
            index=device.index,
            name=device.name,
            uuid=device.uuid,
            utilization=min(100.0, max(0.0, utilization)),
            memory_used_bytes=int(memory.used),
            memory_total_bytes=int(memory.total),
            temperature_c=temperature,
            power_watts=power,
        )

    def close(self) -> None:
        with self._lock:
            if self._initialised:
                with contextlib.suppress(Exception):
                    self._nvml.nvmlShutdown()
            self._initialised = False
            self._disabled = True
            self._devices = []
