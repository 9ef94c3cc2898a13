"""GPU telemetry through NVML (the ``pynvml`` module of nvidia-ml-py). No nvidia-smi.

Any NVML failure (no driver, no library, a GPU gone) is logged once and yields no
data: zero GPUs / 0 % utilisation. Nothing here raises. The NVML module is injectable
so tests can pass a fake.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)


def _load_pynvml() -> ModuleType | None:
    try:
        import pynvml
    except Exception:  # not installed, or broken: treat as "no NVIDIA driver"
        return None
    return pynvml


class NvmlGpuProvider:
    """Mean utilisation over all GPUs and their number; thread-safe, lazily initialised."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml: Any = nvml if nvml is not None else _load_pynvml()
        self._lock = threading.Lock()
        self._initialised = False
        self._disabled = self._nvml is None
        self._handles: list[Any] = []
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
        try:
            self._nvml.nvmlInit()
            count = int(self._nvml.nvmlDeviceGetCount())
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:  # NVMLError and anything a broken library raises
            self._disabled = True
            self._handles = []
            self._report(f"NVML initialisation failed: {exc}")
            return False
        self._initialised = True
        return True

    def count(self) -> int:
        with self._lock:
            return len(self._handles) if self._ensure_init() else 0

    def utilisation(self) -> float:
        """Mean GPU utilisation in percent (0..100) over all GPUs; 0 without data."""
        with self._lock:
            if not self._ensure_init() or not self._handles:
                return 0.0
            try:
                values = [
                    float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in self._handles
                ]
            except Exception as exc:
                self._report(f"NVML query failed: {exc}")
                return 0.0
        return min(100.0, max(0.0, sum(values) / len(values)))

    def close(self) -> None:
        with self._lock:
            if self._initialised:
                with contextlib.suppress(Exception):
                    self._nvml.nvmlShutdown()
            self._initialised = False
            self._disabled = True
            self._handles = []
