"""Cluster summary shared by the admin API, the console and `cloudai status`. Pure."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any


class RateMeter:
    """Events per second over a sliding window, from a monotonically growing counter."""

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self.rate = 0.0

    def sample(self, count: int) -> float:
        now = self._clock()
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        first_time, first_count = samples[0]
        elapsed = now - first_time
        self.rate = (count - first_count) / elapsed if elapsed > 0 else 0.0
        return self.rate


def worker_view(entry: Any, telemetry: Any | None) -> dict[str, Any]:
    """One worker for the API: registry entry + latest telemetry (either may be partial)."""
    view: dict[str, Any] = {
        "worker_id": entry.worker_id,
        "address": entry.address,
        "registered": entry.session,
        "total_cpu": entry.total_cpu,
        "total_memory": entry.total_memory,
        "total_storage": entry.total_storage,
        "total_gpu": entry.total_gpu,
        "is_active": False,
        "cpu_usage": 0.0,
        "memory_usage": 0.0,
        "storage_usage": 0.0,
        "gpu_usage": 0.0,
        "running_tasks": [],
        "last_update": None,
    }
    if telemetry is not None:
        view.update(
            is_active=telemetry.is_active,
            cpu_usage=telemetry.cpu_usage,
            memory_usage=telemetry.memory_usage,
            storage_usage=telemetry.storage_usage,
            gpu_usage=telemetry.gpu_usage,
            running_tasks=[task.to_json() for task in telemetry.running_tasks],
            last_update=telemetry.last_update,
        )
    return view
