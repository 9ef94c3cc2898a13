"""What a dashboard client saw: tags, heartbeat-to-client latency, missed updates. Pure.

Definitions (also in docs/PERFORMANCE.md):

- **delivered**: a heartbeat whose tag a client received in a telemetry frame.
- **coalesced**: an accepted heartbeat a client never received, whose worker's next
  heartbeat was sent within ``window`` seconds after it (one fan-out tick plus 1 ms): the
  master may merge the two into one frame, and the client got the newer one.
- **missed**: any other accepted heartbeat a client never received. Counted only for
  clients that keep up (every client the benchmark does not pause on purpose); a client
  that falls behind gets the latest state of every changed worker instead of each update.
- **stale**: after the run and a drain period, a (client, worker) pair whose last received
  state is older than the worker's last accepted heartbeat. Counted for every client,
  paused ones included: whatever happens, a client must end up with every worker's latest
  state. (A newer state is not stale: the master may have applied a heartbeat whose call
  then failed on the way back, e.g. cancelled under overload.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

from cloudai.bench.histogram import Histogram
from cloudai.bench.schedule import TAG_SCALE, Layout

_STATE = re.compile(rb'"worker_id":"([^"\\]*)","cpu_usage":(-?[0-9][0-9.eE+-]*)')
_WORKER_KEY = b'"worker_id"'

ACCEPTED = 2


def worker_states(frame: bytes) -> list[tuple[bytes, bytes]]:
    """``(worker_id, cpu_usage)`` of every worker in a telemetry frame, as raw bytes.

    A regex over the raw frame (the contract's key order: ``worker_id`` then
    ``cpu_usage``); any other layout falls back to a full JSON parse.
    """
    found = _STATE.findall(frame)
    if len(found) == frame.count(_WORKER_KEY):
        return found
    try:
        document = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(document, dict):
        return []
    out = []
    for worker_id, state in document.items():
        if isinstance(state, dict):
            cpu = state.get("cpu_usage", 0.0)
            out.append((str(worker_id).encode(), repr(float(cpu)).encode()))
    return out


def count_workers(frame: bytes) -> int:
    """Worker entries in a frame, without parsing it."""
    return frame.count(_WORKER_KEY)


class Tracker:
    """Follows one client: which tags it received, when, and its latest state per worker."""

    __slots__ = (
        "active",
        "capacity",
        "foreign",
        "fragments",
        "index_of",
        "last",
        "latency",
        "seen",
        "send_times",
    )

    def __init__(
        self, index_of: dict[bytes, int], send_times: Sequence[float], capacity: int
    ) -> None:
        self.index_of = index_of
        self.send_times = send_times
        self.capacity = capacity
        self.seen = bytearray(capacity)
        self.last = [0] * len(index_of)  # last tag received per worker (0: untagged state)
        self.latency = Histogram()
        self.fragments = 0  # worker entries received while active
        self.foreign = 0  # entries of workers that are not the benchmark's
        self.active = False  # before the start, only the latest state is followed

    def on_frame(self, frame: bytes, received_at: float) -> None:
        index_of = self.index_of
        last = self.last
        capacity = self.capacity
        active = self.active
        for worker_id, cpu in worker_states(frame):
            index = index_of.get(worker_id)
            if index is None:
                self.foreign += 1
                continue
            tag = round(float(cpu) * TAG_SCALE)
            sent_at = self.send_times[tag] if 0 < tag < capacity else 0.0
            if sent_at <= 0.0:  # not a heartbeat of this run (registration, older run)
                last[index] = 0
                continue
            last[index] = tag
            if active:
                self.fragments += 1
                self.seen[tag] = 1
                self.latency.record((received_at - sent_at) * 1000.0)

    def gaps(
        self, layout: Layout, accepted: Sequence[int], states: Sequence[int], window: float
    ) -> tuple[int, int]:
        """(missed, coalesced) over the ``accepted`` tags (see the module's definitions)."""
        missed = coalesced = 0
        seen = self.seen
        send_times = self.send_times
        capacity = self.capacity
        for tag in accepted:
            if seen[tag]:
                continue
            following = layout.next_tag(tag)
            if (
                following < capacity
                and states[following] == ACCEPTED
                and send_times[following] - send_times[tag] <= window
            ):
                coalesced += 1
            else:
                missed += 1
        return missed, coalesced

    def stale(self, last_accepted: Sequence[int]) -> int:
        """Workers whose latest accepted heartbeat is not this client's latest state."""
        return sum(
            1
            for expected, got in zip(last_accepted, self.last, strict=True)
            if expected and got < expected
        )
