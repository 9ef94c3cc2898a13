"""Arrays shared by the benchmark's processes, backed by one memory-mapped file.

- ``send_times[tag]``: monotonic time the heartbeat was handed to the socket (0: unsent);
  written by the generator that owns the tag, read by the WebSocket clients.
- ``states[tag]``: 0 unsent, 1 sent, 2 accepted by the master, 3 failed.
- ``last_accepted[worker]``: the highest accepted tag of each worker.

``time.monotonic()`` is CLOCK_MONOTONIC, one clock for every process of the machine, so a
client subtracts a generator's send time from its own receive time directly. Each slot
has a single writer; a reader sees a slot only after the master relayed the heartbeat,
i.e. after the writer's send system call.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

SENT, ACCEPTED, FAILED = 1, 2, 3


def _sizes(capacity: int, workers: int) -> tuple[int, int, int]:
    times = 8 * capacity
    states = (capacity + 7) // 8 * 8
    last = 8 * workers
    return times, states, last


class SharedArrays:
    def __init__(self, path: Path, capacity: int, workers: int, create: bool = False) -> None:
        self.path = path
        self.capacity = capacity
        self.workers = workers
        times, states, last = _sizes(capacity, workers)
        size = times + states + last
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        view = memoryview(self._map)
        self._views: list[memoryview[Any]] = [view]
        self.send_times = view[:times].cast("d")
        self.states = view[times : times + states]
        self.last_accepted = view[times + states : times + states + last].cast("q")
        self._views += [self.send_times, self.states, self.last_accepted]

    @classmethod
    def create(cls, path: Path, capacity: int, workers: int) -> SharedArrays:
        return cls(path, capacity, workers, create=True)

    def accepted_tags(self) -> list[int]:
        states = self.states
        return [tag for tag in range(1, self.capacity) if states[tag] == ACCEPTED]

    def close(self) -> None:
        for view in reversed(self._views):
            view.release()
        self._views = []
        self._map.close()
