"""Machine telemetry: totals for WorkerInfo and usage samples for heartbeats.

psutil calls here are cheap (procfs reads, statvfs) and never sleep: CPU percent is
``psutil.cpu_percent(interval=None)``, the usage since the previous call (the first
call is made in the constructor); network and disk byte rates are the difference of the
kernel's counters since the previous sample (``rates.RateMeter``; the first readings
are taken in the constructor too). The node still runs ``sample()`` in a thread
(``asyncio.to_thread``) because NVML and a slow filesystem can block.

A figure that cannot be read on this machine (no load average, no disk counters in a
container, no GPU) is None in the sample and left out of the heartbeat; a failing read
is logged once.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psutil

from cloudai.worker.gpu import GpuSample
from cloudai.worker.rates import Counters, RateMeter
from cloudai.worker.settings import GIB

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class GpuProvider(Protocol):
    """A GPU vendor's provider (``gpu.NvmlGpuProvider``). It may also have
    ``devices() -> list[GpuSample]``, one reading per device: ``SystemSampler`` asks for
    it when the provider has it."""

    def count(self) -> int: ...

    def utilisation(self) -> float: ...


class NoGpu:
    def count(self) -> int:
        return 0

    def utilisation(self) -> float:
        return 0.0

    def devices(self) -> list[GpuSample]:
        return []


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
    # Richer telemetry: None (or empty) when this machine cannot measure it.
    net_rx_bytes_per_sec: float | None = None
    net_tx_bytes_per_sec: float | None = None
    disk_read_bytes_per_sec: float | None = None
    disk_write_bytes_per_sec: float | None = None
    load_avg: tuple[float, float, float] | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    storage_used_bytes: int | None = None
    storage_total_bytes: int | None = None
    gpus: tuple[GpuSample, ...] = ()


def clamp_percent(value: float) -> float:
    if not math.isfinite(value):
        return 0.0
    return min(100.0, max(0.0, float(value)))


def is_loopback(interface: str) -> bool:
    """``lo`` (Linux), ``lo0`` (macOS, BSD): traffic that never leaves the machine."""
    return interface == "lo" or (interface.startswith("lo") and interface[2:].isdigit())


class SystemSampler:
    """Samples the machine; ``storage`` is the filesystem holding ``work_dir``."""

    def __init__(
        self,
        work_dir: Path,
        gpu: GpuProvider | None = None,
        psutil_module: Any = psutil,
        *,
        clock: Callable[[], float] = time.monotonic,
        loadavg: Callable[[], tuple[float, float, float]] | None = None,
    ) -> None:
        self._work_dir = str(work_dir)
        self._gpu: GpuProvider = gpu if gpu is not None else NoGpu()
        self._devices: Callable[[], list[GpuSample]] | None = getattr(self._gpu, "devices", None)
        self._ps = psutil_module
        self._loadavg = loadavg if loadavg is not None else self._default_loadavg()
        self._failed: set[str] = set()  # what could not be read (logged once each)
        self._net = RateMeter(2, clock)
        self._disk = RateMeter(2, clock)
        self._ps.cpu_percent(interval=None)  # start the interval of the first sample
        self._net.update(self._net_counters())  # and of the first rates
        self._disk.update(self._disk_counters())

    def _default_loadavg(self) -> Callable[[], tuple[float, float, float]] | None:
        if hasattr(os, "getloadavg"):
            return os.getloadavg
        return getattr(self._ps, "getloadavg", None)  # psutil emulates it on Windows

    def _read(self, what: str, read: Callable[[], _T]) -> _T | None:
        """``read()``, or None when it fails (logged once per ``what``)."""
        try:
            return read()
        except Exception as exc:  # OSError, psutil errors, a missing /proc file
            if what not in self._failed:
                self._failed.add(what)
                log.info("no %s telemetry on this machine: %s", what, exc)
            return None

    def _net_counters(self) -> Counters | None:
        def read() -> Counters:
            per_nic = self._ps.net_io_counters(pernic=True) or {}
            return {
                name: (c.bytes_recv, c.bytes_sent)
                for name, c in per_nic.items()
                if not is_loopback(name)
            }

        return self._read("network", read)

    def _disk_counters(self) -> Counters | None:
        def read() -> Counters | None:
            # psutil's machine-wide sum (whole disks, not their partitions too).
            total = self._ps.disk_io_counters(perdisk=False)
            return None if total is None else {"all": (total.read_bytes, total.write_bytes)}

        return self._read("disk I/O", read)

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
        memory = self._ps.virtual_memory()
        net = self._net.update(self._net_counters())
        io = self._disk.update(self._disk_counters())
        load = self._read("load average", self._loadavg) if self._loadavg is not None else None
        gpus = tuple(self._devices()) if self._devices is not None else ()
        if gpus:
            gpu_percent = sum(g.utilization for g in gpus) / len(gpus)
        else:
            gpu_percent = self._gpu.utilisation()
        available = getattr(memory, "available", None)
        return SystemSample(
            cpu_percent=clamp_percent(self._ps.cpu_percent(interval=None)),
            memory_percent=clamp_percent(memory.percent),
            storage_percent=clamp_percent(disk.percent),
            gpu_percent=clamp_percent(gpu_percent),
            storage_free_gb=disk.free / GIB,
            net_rx_bytes_per_sec=None if net is None else net[0],
            net_tx_bytes_per_sec=None if net is None else net[1],
            disk_read_bytes_per_sec=None if io is None else io[0],
            disk_write_bytes_per_sec=None if io is None else io[1],
            load_avg=None if load is None else (float(load[0]), float(load[1]), float(load[2])),
            # In use = not available: the same measure as memory_percent.
            memory_used_bytes=None if available is None else int(memory.total - available),
            memory_total_bytes=int(memory.total),
            storage_used_bytes=int(disk.used),
            storage_total_bytes=int(disk.total),
            gpus=gpus,
        )

    def storage_free_gb(self) -> float:
        return float(self._ps.disk_usage(self._work_dir).free / GIB)
