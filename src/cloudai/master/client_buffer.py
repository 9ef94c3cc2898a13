"""Per-client outgoing buffer for the telemetry stream. Pure logic; no I/O.

Each WebSocket client owns one. Updates are coalesced per worker, so a client that
falls behind still gets the latest state of every worker that changed (never stale
data, never a silent gap), and its memory is bounded by the number of workers.
When the client keeps up, the hub's shared, already-encoded frame is sent as is.

Event frames (topics ``transitions``, ``alerts``, ``tasks``, and the answers to the
client's control messages) are not coalesced: each is sent, in order, before the
pending telemetry. At most ``max_events`` wait; beyond that the oldest are dropped and
counted (``events_dropped``), so a client that reads nothing stays bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from cloudai.telemetry.encoding import join_fragments

MAX_EVENTS = 256  # event frames waiting for one client


class ClientBuffer:
    __slots__ = ("_events", "_frame", "_pending", "coalesced", "events_dropped")

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self._pending: dict[str, bytes] = {}
        self._frame: bytes | None = None  # shared frame equal to _pending, when there is one
        self._events: deque[bytes] = deque(maxlen=max_events)
        self.coalesced = 0  # worker updates replaced by a newer one before being sent
        self.events_dropped = 0  # event frames dropped because max_events were waiting

    def offer(self, frame: bytes, fragments: Mapping[str, bytes]) -> bool:
        """Queue ``fragments`` (whose encoded frame is ``frame``). True if it was empty."""
        was_empty = self._frame is None and not self._pending and not self._events
        if self._frame is None and not self._pending:
            self._frame = frame
            self._pending = dict(fragments)
            return was_empty
        self._frame = None
        pending = self._pending
        for worker_id, fragment in fragments.items():
            if worker_id in pending:
                self.coalesced += 1
            pending[worker_id] = fragment
        return False

    def replace(self, frame: bytes, fragments: Mapping[str, bytes]) -> bool:
        """Drop the pending telemetry and queue ``frame`` (a snapshot) instead; events
        stay. True if nothing was waiting."""
        was_empty = self.is_empty
        self._frame = frame
        self._pending = dict(fragments)
        return was_empty

    def drop_telemetry(self) -> None:
        """Forget the pending telemetry (the client no longer wants it); events stay."""
        self._frame, self._pending = None, {}

    def offer_event(self, frame: bytes) -> bool:
        """Queue an event frame. True if the buffer was empty."""
        was_empty = self.is_empty
        events = self._events
        if len(events) == events.maxlen:
            self.events_dropped += 1
        events.append(frame)
        return was_empty

    def take(self) -> bytes | None:
        """The next frame to send (the oldest event, else every pending worker), or None
        when there is nothing."""
        if self._events:
            return self._events.popleft()
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
        return self._frame is None and not self._pending and not self._events

    def __len__(self) -> int:
        return len(self._pending)
