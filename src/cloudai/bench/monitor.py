"""CPU and memory of a process (the master), sampled by the coordinator with psutil."""

from __future__ import annotations

import contextlib
import time

import psutil


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine was busy since boot (all cores, not idle/iowait)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class ProcessMonitor:
    """CPU seconds over a window and RSS samples of one pid (children not included)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._process = psutil.Process(pid)
        self._cpu_start: float | None = None
        self._cpu_end: float | None = None
        self._machine_start: float | None = None
        self._machine_end: float | None = None
        self._machine_start_time = 0.0
        self.rss_samples: list[int] = []

    def cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return self._process.memory_info().rss

    def wait_quiet(
        self, below: float, timeout: float, interval: float = 0.5, quiet_for: float = 2.0
    ) -> float:
        """Wait until the process has used less than ``below`` cores in every ``interval``
        for ``quiet_for`` seconds in a row (a lull between two writes is not the end)."""
        started = time.monotonic()
        previous = self.cpu_seconds()
        quiet = 0.0
        while time.monotonic() - started < timeout and quiet < quiet_for:
            time.sleep(interval)
            current = self.cpu_seconds()
            quiet = quiet + interval if current - previous < below * interval else 0.0
            previous = current
        return time.monotonic() - started

    def begin(self) -> None:
        self._cpu_start = self.cpu_seconds()
        self._machine_start = machine_busy_seconds()
        self._machine_start_time = time.monotonic()
        self.rss_samples = [self.rss()]

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.rss_samples.append(self.rss())

    def end(self) -> None:
        self._cpu_end = self.cpu_seconds()
        self._machine_end = machine_busy_seconds()
        self.sample()

    @property
    def machine_busy(self) -> float | None:
        """CPU seconds every process of the machine used over the window (all cores)."""
        if self._machine_start is None or self._machine_end is None:
            return None
        return self._machine_end - self._machine_start

    @property
    def cpu_used(self) -> float | None:
        if self._cpu_start is None or self._cpu_end is None:
            return None
        return self._cpu_end - self._cpu_start

    def rss_summary_mb(self) -> dict[str, float]:
        samples = self.rss_samples or [0]
        mb = 1024 * 1024
        return {
            "start": round(samples[0] / mb, 1),
            "end": round(samples[-1] / mb, 1),
            "max": round(max(samples) / mb, 1),
        }
