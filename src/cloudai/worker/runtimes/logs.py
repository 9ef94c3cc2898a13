"""Task output bounded to its last N bytes, and its rendering into TaskResult.logs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

OutputTap = Callable[[bytes], None]
"""Called with every piece of a task's output as it is written, from the writing thread
(the event loop or the Docker runtime's reader thread): it must be quick and not raise."""

_taps: dict[Path, OutputTap] = {}
_taps_lock = threading.Lock()


def set_output_tap(path: Path, tap: OutputTap | None) -> None:
    """Give the next ``BoundedLog`` opened at ``path`` a tap (None: remove it). The
    worker's live output stream (``worker/output_stream.py``) sets one per task run
    before the runtime starts it, so that the runtimes need not know about it."""
    with _taps_lock:
        if tap is None:
            _taps.pop(path, None)
        else:
            _taps[path] = tap


def output_tap(path: Path) -> OutputTap | None:
    with _taps_lock:
        return _taps.get(path)


class BoundedLog:
    """An append-only sink that keeps (at least) the last ``limit`` bytes in ``path``.

    The file grows to at most ``2 * limit`` bytes, then is compacted to its last
    ``limit`` bytes (amortised O(1) per byte). Thread-safe: the Docker runtime writes
    from a worker thread.
    """

    def __init__(self, path: Path, limit: int) -> None:
        if limit <= 0:
            raise ValueError("limit must be > 0")
        self.path = path
        self.limit = limit
        self.total_bytes = 0
        self._size = 0
        self._lock = threading.Lock()
        self._tap = output_tap(path)
        # Unbuffered: the file shows the output as it comes (tail -f works).
        self._file = open(path, "w+b", buffering=0)  # noqa: SIM115 - closed by close()

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self._file.closed:
                return
            if self._tap is not None:
                self._tap(data)
            self.total_bytes += len(data)
            if len(data) >= self.limit:
                self._replace(data[-self.limit :])
                return
            self._file.write(data)
            self._size += len(data)
            if self._size > 2 * self.limit:
                self._file.flush()
                self._file.seek(self._size - self.limit)
                self._replace(self._file.read(self.limit))

    def _replace(self, data: bytes) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._file.write(data)
        self._size = len(data)

    def tail(self) -> tuple[bytes, int]:
        """(the last ``limit`` bytes, how many bytes were dropped before them)."""
        with self._lock:
            if self._file.closed:
                data = self.path.read_bytes()[-self.limit :]
            else:
                self._file.flush()
                keep = min(self._size, self.limit)
                self._file.seek(self._size - keep)
                data = self._file.read(keep)
                self._file.seek(0, os.SEEK_END)
            return data, self.total_bytes - len(data)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


def _skip_partial_utf8(data: bytes) -> bytes:
    """Drop continuation bytes at the start of a tail cut inside a UTF-8 character."""
    skip = 0
    while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
        skip += 1
    return data[skip:]


def render_logs(tail: bytes, dropped: int, footer: str) -> tuple[str, bool]:
    """The TaskResult ``logs`` text and ``logs_truncated``.

    A truncated tail starts with a marker line naming how much was dropped; the
    ``footer`` (e.g. the exit code) is always the last line.
    """
    truncated = dropped > 0
    if truncated:
        tail = _skip_partial_utf8(tail)
    text = tail.decode("utf-8", errors="replace")
    parts = []
    if truncated:
        parts.append(
            f"[cloudai] output truncated: the first {dropped} bytes were dropped;"
            f" the last {len(tail)} bytes follow\n"
        )
    parts.append(text)
    if text and not text.endswith("\n"):
        parts.append("\n")
    parts.append(f"[cloudai] {footer}\n")
    return "".join(parts), truncated
