"""Per-client outgoing buffer for the telemetry stream. Pure logic; no I/O.

Each WebSocket client owns one. Updates are coalesced per worker, so a client that
falls behind still gets the latest state of every worker that changed (never stale
data, never a silent gap), and its memory is bounded by the number of workers.
When the client keeps up, the hub's shared, already-encoded frame is sent as is.
"""

from __future__ import annotations

from collections.abc import Mapping

from cloudai.telemetry.encoding import join_fragments


class ClientBuffer:
    __slots__ = ("_frame", "_pending", "coalesced")

    def __init__(self) -> None:
        self._pending: dict[str, bytes] = {}
        self._frame: bytes | None = None  # shared frame equal to _pending, when there is one
        self.coalesced = 0  # worker updates replaced by a newer one before being sent

    def offer(self, frame: bytes, fragments: Mapping[str, bytes]) -> bool:
        """Queue ``fragments`` (whose encoded frame is ``frame``). True if it was empty."""
        was_empty = self._frame is None and not self._pending
        if was_empty:
            self._frame = frame
            self._pending = dict(fragments)
            return True
        self._frame = None
        pending = self._pending
        for worker_id, fragment in fragments.items():
            if worker_id in pending:
                self.coalesced += 1
            pending[worker_id] = fragment
        return False

    def take(self) -> bytes | None:
        """The next frame to send (everything pending), or None when there is nothing."""
        frame, pending = self._frame, self._pending
        self._frame, self._pending = None, {}
        if frame is not None:
            return frame
        if not pending:
            return None
        return join_fragments(pending.values())

    @property
    def is_empty(self) -> bool:
        """Nothing waits to be sent (not even an empty snapshot frame)."""
        return self._frame is None and not self._pending

    def __len__(self) -> int:
        return len(self._pending)
