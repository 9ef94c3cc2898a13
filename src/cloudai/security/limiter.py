"""Failed authentication, per peer: how long to make a peer wait, and when to log it.

Pure: the clock is injected (``time.monotonic`` by default), nothing is written
anywhere. Memory is bounded: a peer is forgotten once its failures have left the window,
and at most ``max_peers`` peers are tracked (beyond that, the one whose last failure is
the oldest is forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

MAX_PEERS: Final = 10_000
"""Peers tracked at most, per limiter."""


class FailureLimiter:
    """Counts failures per peer in a sliding window of ``window`` seconds.

    A peer with ``max_failures`` failures in the window is blocked until the oldest of
    them leaves it: the caller asks ``blocked(peer)`` before it even looks at the
    credentials, and answers "try again in N seconds" while that is above 0.
    """

    def __init__(
        self,
        max_failures: int = 10,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_peers: int = MAX_PEERS,
    ) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, got {max_failures}")
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        if max_peers < 1:
            raise ValueError(f"max_peers must be at least 1, got {max_peers}")
        self.max_failures = max_failures
        self.window = window
        self.max_peers = max_peers
        self._clock = clock
        # peer -> times of its failures in the window (at most max_failures), oldest first;
        # the peers in the order of their last failure, oldest first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """Peers tracked now (for status output and tests)."""
        return len(self._failures)

    def blocked(self, peer: str) -> float:
        """Seconds ``peer`` must wait before its next attempt; 0 if it may try now."""
        times = self._failures.get(peer)
        if times is None or len(times) < self.max_failures:
            return 0.0
        wait = times[0] + self.window - self._clock()
        if wait <= 0:
            self._drop_old(times, self._clock())
            return 0.0
        return wait

    def failed(self, peer: str) -> None:
        """Count a failed attempt of ``peer`` now."""
        now = self._clock()
        self._forget_old(now)
        times = self._failures.get(peer)
        if times is None:
            times = self._failures[peer] = deque(maxlen=self.max_failures)
            while len(self._failures) > self.max_peers:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(peer)
            self._drop_old(times, now)
        times.append(now)

    def succeeded(self, peer: str) -> None:
        """``peer`` got in: its failures are forgotten."""
        self._failures.pop(peer, None)

    def _drop_old(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def _forget_old(self, now: float) -> None:
        """Forget the peers whose last failure has left the window (oldest first, so this
        stops at the first peer still in it: amortised O(1) a call)."""
        horizon = now - self.window
        while self._failures:
            peer, times = next(iter(self._failures.items()))
            if times and times[-1] > horizon:
                break
            del self._failures[peer]


class _Logged:
    __slots__ = ("at", "left_out")

    def __init__(self, at: float) -> None:
        self.at = at
        self.left_out = 0


class LogOnce:
    """Says when to log a peer's failure: at most once per peer per ``interval`` seconds.

    ``allow(peer)`` returns None when the line should be left out (it is counted), or the
    number of the peer's failures left out since its last line: the line can say so.
    """

    def __init__(
        self,
        interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_peers: int = MAX_PEERS,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        if max_peers < 1:
            raise ValueError(f"max_peers must be at least 1, got {max_peers}")
        self.interval = interval
        self.max_peers = max_peers
        self._clock = clock
        # peer -> its last logged line; the peers in the order of those lines, oldest first.
        self._peers: OrderedDict[str, _Logged] = OrderedDict()
        self.suppressed_total = 0
        """Lines left out since this was made, all peers together."""

    def __len__(self) -> int:
        """Peers tracked now (for status output and tests)."""
        return len(self._peers)

    def allow(self, peer: str) -> int | None:
        """None: do not log this one. A number: log it now; that many of ``peer``'s
        failures were left out since its previous line (0 for a first line, or when that
        was long ago and the peer has been forgotten since)."""
        now = self._clock()
        horizon = now - self.interval
        entry = self._peers.get(peer)
        if entry is not None:
            if entry.at > horizon:
                entry.left_out += 1
                self.suppressed_total += 1
                return None
            left_out = entry.left_out
            del self._peers[peer]
        else:
            left_out = 0
        while self._peers:  # forget the peers with no line in the interval, oldest first
            oldest = next(iter(self._peers.values()))
            if oldest.at > horizon:
                break
            self._peers.popitem(last=False)
        self._peers[peer] = _Logged(now)
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        return left_out
