"""Machine telemetry: totals for WorkerInfo and usage samples for heartbeats.

psutil calls here are cheap (procfs reads, statvfs) and never sleep: CPU percent is
``psutil.cpu_percent(interval=None)``, the usage since the previous call (the first
call is made in the constructor). The node still runs ``sample()`` in a thread
(``asyncio.to_thread``) because NVML and a slow filesystem can block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from cloudai.worker.settings import GIB


class GpuProvider(Protocol):
    def count(self) -> int: ...

    def utilisation(self) -> float: ...


class NoGpu:
    def count(self) -> int:
        return 0

    def utilisation(self) -> float:
        return 0.0


@dataclass(frozen=True, slots=True)
class MachineTotals:
    cpu_cores: float
    memory_gb: float
    storage_gb: float
    gpu_count: float


@dataclass(frozen=True, slots=True)
class SystemSample:
    cpu_percent: float
    memory_percent: float
    storage_percent: float
    gpu_percent: float
    storage_free_gb: float


def clamp_percent(value: float) -> float:
    if not math.isfinite(value):
        return 0.0
    return min(100.0, max(0.0, float(value)))


class SystemSampler:
    """Samples the machine; ``storage`` is the filesystem holding ``work_dir``."""

    def __init__(
        self, work_dir: Path, gpu: GpuProvider | None = None, psutil_module: Any = psutil
    ) -> None:
        self._work_dir = str(work_dir)
        self._gpu: GpuProvider = gpu if gpu is not None else NoGpu()
        self._ps = psutil_module
        self._ps.cpu_percent(interval=None)  # start the interval of the first sample

    def totals(self) -> MachineTotals:
        cores = self._ps.cpu_count(logical=True) or 1
        memory = self._ps.virtual_memory().total
        storage = self._ps.disk_usage(self._work_dir).total
        return MachineTotals(
            cpu_cores=float(cores),
            memory_gb=round(memory / GIB, 3),
            storage_gb=round(storage / GIB, 3),
            gpu_count=float(self._gpu.count()),
        )

    def sample(self) -> SystemSample:
        disk = self._ps.disk_usage(self._work_dir)
        return SystemSample(
            cpu_percent=clamp_percent(self._ps.cpu_percent(interval=None)),
            memory_percent=clamp_percent(self._ps.virtual_memory().percent),
            storage_percent=clamp_percent(disk.percent),
            gpu_percent=clamp_percent(self._gpu.utilisation()),
            storage_free_gb=disk.free / GIB,
        )

    def storage_free_gb(self) -> float:
        return float(self._ps.disk_usage(self._work_dir).free / GIB)
